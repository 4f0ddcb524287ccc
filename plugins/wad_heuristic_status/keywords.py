"""The words and phrases that place a client in each stage of the funnel, per language.

Each entry is a regular expression matched case- and accent-insensitively (both the text and the
patterns are folded: lower case, accents and Arabic diacritics removed, so "réduction" and
"reduction" are the same). A pattern matches whole words: `hotel` does not match "hotels"; write
`hotel\\w*` for a stem. Arabic patterns match inside words, because Arabic attaches
conjunctions, articles and prepositions to the word (و, ال, ب...).

`CLIENT` patterns are looked for in the client's messages; `AGENT` patterns in ours (a proposal is
something we send). `WEAK` stages count half: a greeting says little next to a question about
prices in the same message.
"""

from __future__ import annotations

from wad.payloads import ClientStatus

WEAK: frozenset[ClientStatus] = frozenset({"NEW_LEAD"})

_MONTHS_EN = (r"(?:january|february|march|april|may|june|july|august|september|october"
              r"|november|december)")
_MONTHS_RU = r"(?:январ|феврал|март|апрел|ма[йея]|июн|июл|август|сентябр|октябр|ноябр|декабр)\w*"
_MONTHS_FR = (r"(?:janvier|fevrier|mars|avril|mai|juin|juillet|aout|septembre|octobre|novembre"
              r"|decembre)")
_MONTHS_DE = (r"(?:januar|februar|marz|april|mai|juni|juli|august|september|oktober|november"
              r"|dezember)")
_MONTHS_ES = (r"(?:enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre"
              r"|noviembre|diciembre)")
_MONTHS_PL = (r"(?:styczni|lut|marc|kwietni|maj|czerwc|lipc|sierpni|wrzesni|pazdziernik"
              r"|listopad|grudni)\w*")
_MONTHS_AR = "(?:يناير|فبراير|مارس|ابريل|مايو|يونيو|يوليو|اغسطس|سبتمبر|اكتوبر|نوفمبر|ديسمبر)"

CLIENT: dict[ClientStatus, dict[str, list[str]]] = {
    "NEW_LEAD": {
        "en": [r"hello", r"hi", r"hey", r"good (?:morning|afternoon|evening)",
               r"saw your (?:ad|advert|post|page|announcement)", r"interested in",
               r"(?:more )?info(?:rmation)?", r"tell me (?:more )?about"],
        "ru": [r"здравствуй\w*", r"привет\w*", r"добр\w* (?:день|вечер|утро)",
               r"увидел\w* (?:ваш\w* )?реклам\w*", r"интересует", r"подробне\w*",
               r"расскажите"],
        "ar": ["السلام عليكم", "مرحبا", "اهلا", "مساء الخير", "صباح الخير", "رايت اعلان",
               "مهتم", "معلومات"],
        "fr": [r"bonjour", r"bonsoir", r"salut", r"(?:j'ai )?vu votre annonce",
               r"interesse\w*", r"renseignements?", r"informations?"],
        "de": [r"hallo", r"guten (?:tag|morgen|abend)", r"ihre anzeige", r"interessiert",
               r"informationen", r"infos?"],
        "es": [r"hola", r"buen(?:os|as) (?:dias|tardes|noches)", r"vi (?:su|tu) anuncio",
               r"interesad[oa]s?", r"informacion"],
        "pl": [r"dzien dobry", r"dobry wieczor", r"czesc", r"witam", r"ogloszeni\w*",
               r"zainteresowan\w*", r"informacj\w*"],
    },
    "QUALIFIED": {
        "en": [r"we are (?:a family of )?(?:\d+|two|three|four|five|six|seven|eight)",
               r"(?:\d+|two|three|four|five|six) (?:people|adults|persons|of us)",
               r"family of \w+", r"kids?", r"children", r"(?:in|for|from) " + _MONTHS_EN,
               r"from \d+(?:st|nd|rd|th)? to \d+", r"\d+ (?:days|nights)", r"budget",
               r"(?:we|i) (?:want|would like|plan) to (?:go|travel|visit|come)"],
        "ru": [r"нас (?:будет )?(?:\w+ )?(?:двое|трое|четверо|пятеро|шестеро|\d+)",
               r"взросл\w*", r"дет(?:и|ей|ям|ьми)", r"(?:в|с|на) " + _MONTHS_RU,
               r"с \d+ по \d+", r"\d+ (?:дн\w*|ноч\w*)", r"бюджет\w*",
               r"хотим (?:поехать|съездить|приехать|поехать)"],
        "ar": ["نحن [^ ]+ اشخاص", "اشخاص", "اطفال", "شهر", _MONTHS_AR, "ميزاني",
               "نريد السفر", "ايام"],
        "fr": [r"nous sommes", r"personnes", r"adultes", r"enfants",
               r"(?:en|debut|fin|mi) " + _MONTHS_FR, r"du \d+ au \d+", r"\d+ (?:jours|nuits)",
               r"budget", r"nous (?:voudrions|voulons|aimerions) partir"],
        "de": [r"wir sind (?:zu )?\w+", r"personen", r"erwachsene", r"kinder",
               r"(?:im|mitte|anfang|ende) " + _MONTHS_DE, r"vom \d+\.? bis", r"\d+ (?:tage|nachte)",
               r"budget", r"wir (?:mochten|wollen) (?:fahren|reisen|kommen)"],
        "es": [r"somos", r"personas", r"adultos", r"ninos", r"hijos",
               r"(?:en|de|a principios de|a finales de) " + _MONTHS_ES, r"del \d+ al \d+",
               r"\d+ (?:dias|noches)", r"presupuesto", r"queremos (?:viajar|ir|venir)"],
        "pl": [r"jest nas", r"osob[ya]?", r"doros\w*", r"dzieci", r"w " + _MONTHS_PL,
               r"od \d+ do \d+", r"\d+ (?:dni|nocy)", r"budzet\w*",
               r"chcemy (?:jechac|pojechac|przyjechac)"],
    },
    "WARMED": {
        "en": [r"how much", r"prices?", r"costs?", r"included", r"programm?e?",
               r"itinerary", r"hotels?", r"accommodation", r"availab\w*",
               r"send (?:me )?(?:the )?(?:details|program\w*)"],
        "ru": [r"сколько стоит", r"цен\w*", r"стоимост\w*", r"входит", r"включен\w*",
               r"программ\w*", r"гостиниц\w*", r"отел\w*", r"проживани\w*",
               r"свободн\w* мест\w*"],
        "ar": ["كم سعر", "كم السعر", "سعر", "تكلف", "مشمول", "البرنامج", "فندق", "متاح"],
        "fr": [r"combien", r"prix", r"tarifs?", r"compris", r"inclus", r"programme\w*",
               r"hotel", r"hebergement", r"(?:encore )?des places"],
        "de": [r"was kostet", r"preis\w*", r"kosten", r"inklusive", r"inbegriffen",
               r"programm", r"hotel", r"unterkunft", r"freie platze"],
        "es": [r"cuanto (?:cuesta|sale|vale)", r"precios?", r"incluido", r"programa",
               r"hotel", r"alojamiento", r"quedan plazas", r"disponib\w*"],
        "pl": [r"ile kosztuje", r"cen[aeyi]", r"w cenie", r"program\w*", r"hotel\w*",
               r"nocleg\w*", r"wolne miejsca"],
    },
    "PROPOSAL_SENT": {
        "en": [r"(?:your|the) (?:offer|proposal|quote)"],
        "ru": [r"(?:ваше|ваш\w*) (?:предложени\w*|кп)"],
        "ar": ["عرضكم"],
        "fr": [r"votre (?:offre|devis|proposition)"],
        "de": [r"ihr angebot"],
        "es": [r"(?:su|tu) (?:oferta|propuesta|presupuesto)"],
        "pl": [r"(?:wasza|pana|pani) ofert\w*"],
    },
    "NEGOTIATION": {
        "en": [r"discounts?", r"(?:too|a bit|quite|very) expensive", r"expensive",
               r"cheaper", r"lower (?:the )?price", r"better price", r"too much",
               r"(?:other|another) (?:company|agency)", r"what if we"],
        "ru": [r"скидк\w*", r"дорог\w*", r"дешевле", r"снизить цену", r"уступит\w*",
               r"в другой компании", r"торг\w*"],
        "ar": ["خصم", "غالي", "مرتفع", "ارخص", "تخفيض"],
        "fr": [r"reduction", r"remise", r"(?:trop |un peu |assez )?cher", r"moins cher",
               r"baisser le prix", r"rabais"],
        "de": [r"rabatt", r"(?:zu |ein bisschen zu )?teuer", r"billiger", r"gunstiger",
               r"nachlass", r"preis senken"],
        "es": [r"descuentos?", r"caro", r"mas barato", r"rebaja"],
        "pl": [r"znizk\w*", r"rabat\w*", r"za drogo", r"drogo", r"taniej", r"obnizyc"],
    },
    "SOLD": {
        "en": [r"(?:i|we)(?:'ve| have)? (?:paid|transferred)", r"sent the payment",
               r"payment (?:is )?(?:sent|done|made)", r"deposit (?:is )?(?:sent|paid)",
               r"pay the deposit", r"(?:we'll|we will) take it", r"deal", r"let's book",
               r"bank transfer", r"book it"],
        "ru": [r"оплатил\w*", r"оплачено", r"перевел\w*", r"внес\w* предоплат\w*",
               r"бронируем", r"договорились", r"берем", r"чек отправил\w*"],
        "ar": ["تم التحويل", "دفعت", "حولت", "موافق", "نحجز", "الايصال", "العربون"],
        "fr": [r"j'ai (?:paye|fait le virement|regle)", r"virement", r"on reserve",
               r"nous reservons", r"acompte (?:verse|paye)", r"c'est regle"],
        "de": [r"uberwiesen", r"bezahlt", r"wir buchen", r"einverstanden",
               r"anzahlung (?:uberwiesen|bezahlt)", r"gebucht"],
        "es": [r"ya (?:pague|hice la transferencia)", r"transferencia", r"pagado",
               r"reservamos", r"trato hecho"],
        "pl": [r"zaplacil\w*", r"wplacil\w*", r"przelew\w*", r"rezerwujemy",
               r"umowa stoi", r"zgoda"],
    },
    "SERVICE": {
        "en": [r"driver", r"pick ?up", r"picked up", r"guide", r"(?:we're|we are) waiting",
               r"arrived", r"(?:hotel )?room", r"luggage", r"where (?:do|should) we meet",
               r"what (?:should|do) we (?:bring|wear)"],
        "ru": [r"водител\w*", r"гид\w*", r"забер\w*", r"ждем", r"стоим у",
               r"приехал\w*", r"номер в (?:отеле|гостинице)", r"багаж\w*",
               r"во сколько (?:нас|выезд)", r"где встреча"],
        "ar": ["السائق", "المرشد", "ننتظر", "وصل", "الغرفه", "الحقائب", "متى ياتي"],
        "fr": [r"chauffeur", r"guide", r"nous attendons", r"arrive", r"chambre",
               r"bagages?", r"a quelle heure", r"vient nous chercher"],
        "de": [r"fahrer", r"reiseleiter", r"abgeholt", r"abholen", r"wir warten",
               r"angekommen", r"zimmer", r"gepack", r"um wie viel uhr"],
        "es": [r"conductor", r"chofer", r"guia", r"recogen", r"recoger", r"esperando",
               r"llego", r"habitacion", r"equipaje", r"a que hora"],
        "pl": [r"kierowc\w*", r"przewodnik\w*", r"odbierze\w*", r"odbior\w*", r"czekamy",
               r"przyjechal\w*", r"pokoj\w*", r"bagaz\w*", r"o ktorej"],
    },
    "CLOSED": {
        "en": [r"cancel\w*", r"not interested", r"no thanks", r"changed (?:our|my) minds?",
               r"(?:chose|found|booked with) another (?:company|agency|tour)", r"refund",
               r"(?:had|was) (?:an? )?(?:amazing|great|wonderful|fantastic) (?:time|trip)",
               r"thank you for everything"],
        "ru": [r"отмен\w*", r"не интересно", r"передумали", r"выбрали другую",
               r"вернуть (?:деньги|предоплату)", r"возврат\w*",
               r"все было (?:просто )?(?:отлично|замечательно|супер|прекрасно)",
               r"спасибо за (?:все|отличную поездку)"],
        "ar": ["نلغي", "الغاء", "غير مهتم", "لا شكرا", "استرجاع", "رحله رائعه"],
        "fr": [r"annul\w*", r"pas interesse\w*", r"plus besoin", r"rembours\w*",
               r"etait (?:magnifique|super|genial|formidable)", r"merci pour tout"],
        "de": [r"stornieren", r"absagen", r"kein interesse", r"erstattung",
               r"war (?:wunderschon|toll|super|fantastisch)", r"vielen dank fur alles"],
        "es": [r"cancelar", r"no (?:me|nos) interesa", r"devuelven", r"reembolso",
               r"fue (?:maravilloso|genial|increible)", r"gracias por todo"],
        "pl": [r"odwola\w*", r"rezygnuj\w*", r"zrezygnow\w*", r"rezygnacj\w*",
               r"nie jestesmy zainteresowani", r"zwrot\w*",
               r"byla (?:wspaniala|super|swietna)", r"dziekujemy za wszystko"],
    },
}

AGENT: dict[ClientStatus, dict[str, list[str]]] = {
    "PROPOSAL_SENT": {
        "en": [r"(?:we|i) (?:can )?offer", r"here is (?:the|our|your) (?:offer|proposal|quote"
               r"|program\w*|itinerary)", r"the (?:total )?price (?:is|would be|will be)",
               r"total (?:price|cost)"],
        "ru": [r"предлагаем", r"(?:наше|вот|высылаю|отправляю) (?:\w+ )?предложени\w*",
               r"стоимость (?:составит|будет)", r"итого"],
        "ar": ["نقدم لكم", "عرضنا", "اليكم العرض", "السعر الاجمالي", "اليكم البرنامج"],
        "fr": [r"nous vous proposons", r"voici (?:notre|le|votre) (?:offre|devis|programme)",
               r"le prix (?:est|sera|serait)"],
        "de": [r"wir bieten (?:ihnen )?", r"hier ist (?:unser|das|ihr) angebot",
               r"der (?:gesamt)?preis betragt"],
        "es": [r"(?:le|te|les) ofrecemos", r"aqui (?:tiene|tienes) (?:la|nuestra|su|tu) "
               r"(?:propuesta|oferta)", r"el precio (?:es|seria|sera)"],
        "pl": [r"proponujemy", r"oto (?:nasza |pana |pani )?oferta", r"cena wynosi",
               r"koszt calkowity"],
    },
    "SOLD": {
        "en": [r"payment (?:is )?received", r"booking (?:is )?confirmed"],
        "ru": [r"оплату получили", r"бронь подтвержден\w*", r"бронирование подтвержден\w*"],
        "ar": ["تم استلام الدفع", "تم تاكيد الحجز"],
        "fr": [r"paiement (?:bien )?recu", r"reservation (?:est )?confirmee"],
        "de": [r"zahlung (?:ist )?eingegangen", r"buchung (?:ist )?bestatigt"],
        "es": [r"pago recibido", r"reserva (?:esta )?confirmada"],
        "pl": [r"platnosc otrzymana", r"rezerwacja (?:jest )?potwierdzona"],
    },
}
