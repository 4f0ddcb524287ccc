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
        "en": [r"(?:we are|we're) a couple", r"a couple", r"a week", r"(?:mid|late|early)[- ]" + _MONTHS_EN, r"we are (?:a family of )?(?:\d+|two|three|four|five|six|seven|eight)",
               r"(?:\d+|two|three|four|five|six) (?:people|adults|persons|of us)",
               r"family of \w+", r"kids?", r"children", r"(?:in|for|from) " + _MONTHS_EN,
               r"from \d+(?:st|nd|rd|th)? to \d+", r"\d+ (?:days|nights)", r"budget",
               r"(?:we|i) (?:want|would like|plan) to (?:go|travel|visit|come)"],
        "ru": [r"(?:двое|трое|четверо) взрослых", r"нас двое", r"нас (?:будет )?(?:\w+ )?(?:двое|трое|четверо|пятеро|шестеро|\d+)",
               r"взросл\w*", r"дет(?:и|ей|ям|ьми)", r"(?:в|с|на) " + _MONTHS_RU,
               r"с \d+ по \d+", r"\d+ (?:дн\w*|ноч\w*)", r"бюджет\w*",
               r"хотим (?:поехать|съездить|приехать|поехать)"],
        "ar": ["نحن عائله", "اسبوع", "لمده", "نحن [^ ]+ اشخاص", "اشخاص", "اطفال", "شهر", _MONTHS_AR, "ميزاني",
               "نريد السفر", "ايام"],
        "fr": [r"\d+ adultes?", r"quinzaine", r"une dizaine de jours", r"nous sommes", r"personnes", r"adultes", r"enfants",
               r"(?:en|debut|fin|mi) " + _MONTHS_FR, r"du \d+ au \d+", r"\d+ (?:jours|nuits)",
               r"budget", r"nous (?:voudrions|voulons|aimerions) partir"],
        "de": [r"(?:zwei|drei|vier|\d+) erwachsene", r"\w*halfte", r"(?:etwa )?(?:zehn|\w+) tage", r"wir sind (?:zu )?\w+", r"personen", r"erwachsene", r"kinder",
               r"(?:im|mitte|anfang|ende) " + _MONTHS_DE, r"vom \d+\.? bis", r"\d+ (?:tage|nachte)",
               r"budget", r"wir (?:mochten|wollen) (?:fahren|reisen|kommen)"],
        "es": [r"somos", r"personas", r"adultos", r"ninos", r"hijos",
               r"(?:en|de|a principios de|a finales de) " + _MONTHS_ES, r"del \d+ al \d+",
               r"\d+ (?:dias|noches)", r"presupuesto", r"queremos (?:viajar|ir|venir)"],
        "pl": [r"czworo", r"piecioro", r"troje", r"jest nas", r"osob[ya]?", r"doros\w*", r"dzieci", r"w " + _MONTHS_PL,
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
        "en": [r"more than we (?:have|planned|wanted|can)", r"our budget is", r"over our budget", r"(?:could|can) we (?:drop|skip|remove)", r"match (?:their|the|that) (?:offer|price)", r"pricey", r"discounts?", r"(?:too|a bit|quite|very) expensive", r"expensive",
               r"cheaper", r"lower (?:the )?price", r"better price", r"too much",
               r"(?:other|another) (?:company|agency)", r"what if we"],
        "ru": [r"а если без", r"можно без", r"подешевле", r"скидк\w*", r"дорог\w*", r"дешевле", r"снизить цену", r"уступит\w*",
               r"в другой компании", r"торг\w*"],
        "ar": ["غالي علينا", "ما في تخفيض", "خصم", "غالي", "مرتفع", "ارخص", "تخفيض"],
        "fr": [r"au-dessus de notre budget", r"et si on", r"un geste", r"reduction", r"remise", r"(?:trop |un peu |assez )?cher", r"moins cher",
               r"baisser le prix", r"rabais"],
        "de": [r"gerechnet", r"verzichten", r"und wenn wir", r"zu viel", r"rabatt", r"(?:zu |ein bisschen zu )?teuer", r"billiger", r"gunstiger",
               r"nachlass", r"preis senken"],
        "es": [r"mas barato", r"y si (?:quitamos|no)", r"descuentos?", r"caro", r"mas barato", r"rebaja"],
        "pl": [r"a gdyby", r"znizk\w*", r"rabat\w*", r"za drogo", r"drogo", r"taniej", r"obnizyc"],
    },
    "SOLD": {
        "en": [r"go ahead", r"we(?:'d| would) like to book", r"(?:i|we)(?:'ve| have)? (?:paid|transferred)", r"sent the payment",
               r"payment (?:is )?(?:sent|done|made)", r"deposit (?:is )?(?:sent|paid)",
               r"pay the deposit", r"(?:we'll|we will) take it", r"deal", r"let's book",
               r"bank transfer", r"book it"],
        "ru": [r"мы согласны", r"давайте оформлять", r"оформляем", r"оплатил\w*", r"оплачено", r"перевел\w*", r"внес\w* предоплат\w*",
               r"бронируем", r"договорились", r"берем", r"чек отправил\w*"],
        "ar": ["تم التحويل", "دفعت", "حولت", "موافق", "نحجز", "الايصال", "العربون"],
        "fr": [r"c'est bon pour nous", r"on part sur", r"j'ai (?:paye|fait le virement|regle)", r"virement", r"on reserve",
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
        "en": [r"(?:go|going) (?:to )?\w+ (?:this year )?instead", r"instead", r"thanks for trying", r"not this (?:year|time)", r"won't be able to come", r"cancel\w*", r"not interested", r"no thanks", r"changed (?:our|my) minds?",
               r"(?:chose|found|booked with) another (?:company|agency|tour)", r"refund",
               r"(?:had|was) (?:an? )?(?:amazing|great|wonderful|fantastic) (?:time|trip)",
               r"thank you for everything"],
        "ru": [r"остаться дома", r"не поедем", r"решили (?:в этом году )?(?:не|остаться)", r"отмен\w*", r"не интересно", r"передумали", r"выбрали другую",
               r"вернуть (?:деньги|предоплату)", r"возврат\w*",
               r"все было (?:просто )?(?:отлично|замечательно|супер|прекрасно)",
               r"спасибо за (?:все|отличную поездку)"],
        "ar": ["قررنا", "لن نستطيع", "نلغي", "الغاء", "غير مهتم", "لا شكرا", "استرجاع", "رحله رائعه"],
        "fr": [r"une autre agence", r"plus interesses", r"annul\w*", r"pas interesse\w*", r"plus besoin", r"rembours\w*",
               r"etait (?:magnifique|super|genial|formidable)", r"merci pour tout"],
        "de": [r"doch nicht", r"stornieren", r"absagen", r"kein interesse", r"erstattung",
               r"war (?:wunderschon|toll|super|fantastisch)", r"vielen dank fur alles"],
        "es": [r"nos quedamos en casa", r"no da", r"no podemos ir", r"cancelar", r"no (?:me|nos) interesa", r"devuelven", r"reembolso",
               r"fue (?:maravilloso|genial|increible)", r"gracias por todo"],
        "pl": [r"(?:w tym roku )?jednak jedziemy", r"dziekuje za oferte, ale", r"odwola\w*", r"rezygnuj\w*", r"zrezygnow\w*", r"rezygnacj\w*",
               r"nie jestesmy zainteresowani", r"zwrot\w*",
               r"byla (?:wspaniala|super|swietna)", r"dziekujemy za wszystko"],
    },
}

_AMOUNT = r"\d[\d ,.]*\d ?"
_PRICE = {
    "en": _AMOUNT + r"(?:usd|eur|dollars?|euros?|som)|[$€] ?\d",
    "ru": _AMOUNT + r"(?:usd|eur|долл\w*|евро|сом\w*|тысяч\w*)",
    "ar": "[0-9٠-٩]+ ?(?:دولار|يورو)",
    "fr": _AMOUNT + r"(?:€|eur|euros?|usd|dollars?)",
    "de": _AMOUNT + r"(?:€|eur|euro|usd|dollar)",
    "es": _AMOUNT + r"(?:€|eur|euros?|usd|dolares)",
    "pl": _AMOUNT + r"(?:usd|eur|euro|zl|dolarow)",
}
"""An amount with its currency, in our message: a price quoted."""

PRICE: dict[str, list[str]] = {lang: [pattern] for lang, pattern in _PRICE.items()}
"""A price in our message; a second one after the client answered the first is a revised price
(negotiation)."""

AGENT: dict[ClientStatus, dict[str, list[str]]] = {
    "PROPOSAL_SENT": {
        "en": [_PRICE["en"], r"i'd suggest", r"day-by-day", r"itinerary", r"(?:we|i) (?:can )?offer", r"here is (?:the|our|your) (?:offer|proposal|quote"
               r"|program\w*|itinerary)", r"the (?:total )?price (?:is|would be|will be)",
               r"total (?:price|cost)"],
        "ru": [_PRICE["ru"], r"программ\w* во вложении", r"во вложении", r"предлагаем", r"(?:наше|вот|высылаю|отправляю) (?:\w+ )?предложени\w*",
               r"стоимость (?:составит|будет)", r"итого"],
        "ar": [_PRICE["ar"], "جهزنا لكم", "البرنامج", "نقدم لكم", "عرضنا", "اليكم العرض", "السعر الاجمالي", "اليكم البرنامج"],
        "fr": [_PRICE["fr"], r"voici notre proposition", r"notre proposition", r"nous vous proposons", r"voici (?:notre|le|votre) (?:offre|devis|programme)",
               r"le prix (?:est|sera|serait)"],
        "de": [_PRICE["de"], r"im anhang", r"anbei", r"wir bieten (?:ihnen )?", r"hier ist (?:unser|das|ihr) angebot",
               r"der (?:gesamt)?preis betragt"],
        "es": [_PRICE["es"], r"adjunto el programa", r"el programa", r"(?:le|te|les) ofrecemos", r"aqui (?:tiene|tienes) (?:la|nuestra|su|tu) "
               r"(?:propuesta|oferta)", r"el precio (?:es|seria|sera)"],
        "pl": [_PRICE["pl"], r"przygotowalismy", r"szczegoly w (?:pdf|zalaczniku)", r"w zalaczniku", r"proponujemy", r"oto (?:nasza |pana |pani )?oferta", r"cena wynosi",
               r"koszt calkowity"],
    },
    "SOLD": {
        "en": [r"received", r"(?:is|are) confirmed", r"voucher", r"payment (?:is )?received", r"booking (?:is )?confirmed", r"(?:is|are) (?:now )?booked", r"got it, thank"],
        "ru": [r"вс[её] пришло", r"оплата получена", r"подтвержд[её]н\w*", r"ваучер", r"оплату получили", r"бронь подтвержден\w*", r"бронирование подтвержден\w*"],
        "ar": ["وصلنا المبلغ", "استلمنا", "مؤكد", "تم استلام الدفع", "تم تاكيد الحجز"],
        "fr": [r"bien recu", r"(?:est|sont) confirme\w*", r"paiement (?:bien )?recu", r"reservation (?:est )?confirmee", r"(?:est|sont) reserve\w*"],
        "de": [r"(?:ist )?angekommen", r"(?:ist|sind) (?:bestatigt|fest)", r"eingegangen", r"zahlung (?:ist )?eingegangen", r"buchung (?:ist )?bestatigt", r"zahlung ist da", r"(?:ist|sind) gebucht"],
        "es": [r"recibido", r"confirmad[oa]s?", r"pago recibido", r"reserva (?:esta )?confirmada", r"(?:esta|estan) reservad[oa]s?"],
        "pl": [r"wplata dotarla", r"dotarl[ao]", r"potwierdzon\w*", r"platnosc otrzymana", r"rezerwacja (?:jest )?potwierdzona", r"(?:termin )?jest (?:panstwa|wasz)", r"zarezerwowan\w*"],
    },
}


AGENT_MORE: dict[ClientStatus, dict[str, list[str]]] = {
    "NEGOTIATION": {
        "en": [r"(?:that|this) (?:would )?brings? it (?:down )?to", r"we can (?:shorten|lower|reduce)",
               r"best we can (?:do|offer)", r"discount"],
        "ru": [r"выйдет \d", r"лучшее,? что (?:можем|могу)", r"скидк\w*"],
        "ar": ["نقدر نعطيكم", "خصم"],
        "fr": [r"on peut descendre", r"nous pouvons descendre", r"reduction", r"remise"],
        "de": [r"dann waren es", r"rabatt"],
        "es": [r"podemos dejarlo en", r"descuento"],
        "pl": [r"mozemy dac", r"rabat\w*", r"znizk\w*"],
    },
    "SERVICE": {
        "en": [r"will (?:pick you up|meet you)", r"your driver", r"welcome to",
               r"how was (?:your|the) trip", r"review", r"calling you now",
               r"(?:he'?s|she'?s|he is) at"],
        "ru": [r"встретит", r"ваш водитель", r"водитель (?:будет|приедет|ждет|встретит)",
               r"как вам поездка", r"отзыв\w*", r"будет через"],
        "ar": ["سيصل خلال", "نعتذر", "كيف كانت الرحله", "سائقكم"],
        "fr": [r"sera la dans", r"il sera la", r"comment s'est passe", r"crevaison"],
        "de": [r"ihr fahrer", r"wartet am", r"willkommen in", r"ich rufe"],
        "es": [r"llega en", r"se le pincho", r"su conductor"],
        "pl": [r"bedzie za", r"korek", r"kierowca (?:bedzie|czeka)"],
    },
    "CLOSED": {
        "en": [r"all the best", r"hope to see you", r"next (?:season|year|time)", r"another time"],
        "ru": [r"в следующем сезоне", r"будем рады видеть", r"в следующий раз"],
        "ar": ["نتمنى نشوفكم", "ولا يهمك"],
        "fr": [r"bon voyage a vous", r"une prochaine fois", r"aucun souci"],
        "de": [r"gute besserung", r"das tut mir leid", r"vielleicht (?:ein )?nachstes"],
        "es": [r"aqui estaremos", r"cuando quieran"],
        "pl": [r"w przyszlym roku", r"szkoda", r"do zobaczenia"],
    },
}
"""More of our own messages' evidence: a lower price after an objection (negotiation), the
driver and the trip (service), a goodbye to a client who declined (closed)."""

PAYMENT_REQUEST: dict[str, list[str]] = {
    "en": [r"deposit", r"iban", r"account", r"send it to", r"(?:please )?transfer", r"advance",
           r"prepayment", r"bank", r"card number", r"payment details", r"pay (?:by|via|to)"],
    "ru": [r"предоплат\w*", r"реквизит\w*", r"мбанк", r"переведите", r"аванс\w*", r"на карту",
           r"номер карты", r"сч[её]т\w*", r"банк\w*"],
    "ar": ["دفعه مقدمه", "حساب", "عربون", "تحويل", "بنك", "رقم البطاقه"],
    "fr": [r"acompte", r"iban", r"virement", r"avance", r"rib", r"banque", r"coordonnees bancaires"],
    "de": [r"anzahlung", r"iban", r"uberweis\w*", r"vorauszahlung", r"bank\w*", r"kontodaten",
           r"verwendungszweck"],
    "es": [r"anticipo", r"cuenta", r"transferencia", r"adelanto", r"sena", r"banco",
           r"datos bancarios"],
    "pl": [r"zaliczk\w*", r"numer konta", r"konto", r"przelew\w*", r"przedplat\w*", r"bank\w*"],
    "*": [r"[a-z]{2}\d{2}(?: ?[0-9a-z]{4}){3,}"],
}
"""Our messages that ask for a payment: the client's next "done" means it was paid."""

DONE: dict[str, list[str]] = {
    "en": [r"sent(?: it)?", r"done", r"transferred", r"just paid", r"paid", r"on (?:its|the) way"],
    "ru": [r"перевел\w*", r"отправил\w*", r"готово", r"сделал\w*", r"оплатил\w*", r"скинул\w*"],
    "ar": ["ارسلت", "حولت", "دفعت", "تم"],
    "fr": [r"c'est fait", r"envoye", r"fait le virement", r"paye", r"vire"],
    "de": [r"erledigt", r"ist raus", r"ist unterwegs", r"uberwiesen", r"bezahlt", r"gemacht"],
    "es": [r"listo", r"ahi va", r"hecho", r"enviado", r"pagado", r"transferido"],
    "pl": [r"wyslane", r"zrobione", r"poszlo", r"wyslal\w*", r"zaplacon\w*", r"przelal\w*"],
}
"""A client's "sent it", "c'est fait", "listo": paid, when we had just asked for a payment."""
