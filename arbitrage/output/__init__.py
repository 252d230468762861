"""What a run leaves behind: the run folder (runfolder.py owns its layout), the dataset, the card."""
