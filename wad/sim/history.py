"""Seeded generator of realistic chat history: travel-agency conversations in seven languages,
with media, group chats and status updates. The same seed gives the same history."""

from __future__ import annotations

import random
import time
from typing import Any

import phonenumbers

from wad.sim.model import STATUS_WID, Account, SimError, Simulator

LANGUAGES = ("en", "ru", "ar", "fr", "de", "es", "pl")

# Each language: first names, then phrases a client writes, then phrases the agency answers.
NAMES = {
    "en": ["John Miller", "Emily Clark", "Michael Brown", "Sarah Wilson", "David Taylor"],
    "ru": ["Алексей Иванов", "Мария Петрова", "Дмитрий Смирнов", "Ольга Козлова", "Иван Попов"],
    "ar": ["أحمد علي", "فاطمة حسن", "محمد سعيد", "ليلى خالد", "عمر يوسف"],
    "fr": ["Pierre Dubois", "Camille Martin", "Julien Bernard", "Sophie Laurent", "Luc Moreau"],
    "de": ["Jonas Müller", "Anna Schmidt", "Lukas Schneider", "Lea Fischer", "Felix Weber"],
    "es": ["Carlos García", "Lucía Fernández", "Javier López", "María Sánchez", "Pablo Ruiz"],
    "pl": ["Piotr Nowak", "Anna Kowalska", "Tomasz Wiśniewski", "Katarzyna Wójcik", "Marek Zieliński"],
}
CLIENT = {
    "en": ["Hello! I saw your tours to Issyk-Kul, are there places in July?",
           "How much is the 5-day horse trek for two people?",
           "Can we start on the 14th of August?", "Does the price include the hotel and meals?",
           "Thank you, that sounds great!", "Is it possible to pay by card?",
           "We are a family with two kids, is the tour suitable for them?",
           "What should we bring for the mountains?", "Perfect, please book it for us."],
    "ru": ["Здравствуйте! Есть ли места на тур на Иссык-Куль в июле?",
           "Сколько стоит конный тур на 5 дней для двоих?", "Можно начать 14 августа?",
           "Входит ли в цену проживание и питание?", "Спасибо большое, очень интересно!",
           "Можно оплатить картой?", "Мы с двумя детьми, тур подойдёт для них?",
           "Что взять с собой в горы?", "Отлично, бронируйте, пожалуйста."],
    "ar": ["مرحبا! هل توجد أماكن في رحلة إيسيك كول في يوليو؟",
           "كم سعر رحلة الخيل لمدة خمسة أيام لشخصين؟", "هل يمكن أن نبدأ في ١٤ أغسطس؟",
           "هل السعر يشمل الفندق والوجبات؟", "شكرا جزيلا، هذا رائع!", "هل يمكن الدفع بالبطاقة؟",
           "نحن عائلة مع طفلين، هل الرحلة مناسبة لهم؟", "ماذا نحتاج أن نأخذ إلى الجبال؟",
           "ممتاز، من فضلك احجز لنا."],
    "fr": ["Bonjour ! Y a-t-il encore des places pour le circuit à Issyk-Koul en juillet ?",
           "Combien coûte la randonnée à cheval de 5 jours pour deux personnes ?",
           "Pouvons-nous commencer le 14 août ?", "Le prix comprend-il l'hôtel et les repas ?",
           "Merci beaucoup, c'est parfait !", "Est-il possible de payer par carte ?",
           "Nous sommes une famille avec deux enfants, le circuit leur convient-il ?",
           "Que faut-il emporter pour la montagne ?", "Très bien, réservez pour nous s'il vous plaît."],
    "de": ["Hallo! Gibt es im Juli noch Plätze für die Tour zum Issyk-Kul?",
           "Was kostet der fünftägige Reitausflug für zwei Personen?",
           "Können wir am 14. August starten?", "Sind Hotel und Verpflegung im Preis enthalten?",
           "Vielen Dank, das klingt toll!", "Kann man mit Karte bezahlen?",
           "Wir sind eine Familie mit zwei Kindern, passt die Tour für sie?",
           "Was sollen wir für die Berge mitnehmen?", "Super, bitte buchen Sie für uns."],
    "es": ["¡Hola! ¿Quedan plazas para el tour al Issyk-Kul en julio?",
           "¿Cuánto cuesta la ruta a caballo de 5 días para dos personas?",
           "¿Podemos empezar el 14 de agosto?", "¿El precio incluye hotel y comidas?",
           "¡Muchas gracias, suena genial!", "¿Se puede pagar con tarjeta?",
           "Somos una familia con dos niños, ¿el tour es adecuado para ellos?",
           "¿Qué debemos llevar para la montaña?", "Perfecto, resérvelo para nosotros, por favor."],
    "pl": ["Dzień dobry! Czy są jeszcze miejsca na wycieczkę nad Issyk-Kul w lipcu?",
           "Ile kosztuje pięciodniowa wyprawa konna dla dwóch osób?",
           "Czy możemy zacząć 14 sierpnia?", "Czy cena obejmuje hotel i wyżywienie?",
           "Dziękuję bardzo, brzmi świetnie!", "Czy można zapłacić kartą?",
           "Jesteśmy rodziną z dwójką dzieci, czy wycieczka jest dla nich odpowiednia?",
           "Co zabrać w góry?", "Świetnie, proszę o rezerwację."],
}
AGENT = {
    "en": ["Good afternoon! Yes, we still have places in July.",
           "The 5-day tour costs 450 USD per person, hotel and meals included.",
           "Yes, the 14th works. I will send you the program.", "You are welcome!",
           "Warm clothes, good shoes and sunscreen."],
    "ru": ["Добрый день! Да, в июле ещё есть места.",
           "Тур на 5 дней стоит 450 долларов с человека, проживание и питание включены.",
           "Да, 14-го можно. Отправлю вам программу.", "Пожалуйста!",
           "Тёплую одежду, удобную обувь и солнцезащитный крем."],
    "ar": ["مساء الخير! نعم، لا تزال هناك أماكن في يوليو.",
           "تكلفة الرحلة لمدة خمسة أيام ٤٥٠ دولارا للشخص، شاملة الفندق والوجبات.",
           "نعم، يوم ١٤ مناسب. سأرسل لكم البرنامج.", "على الرحب والسعة!",
           "ملابس دافئة وأحذية مريحة وواقي شمس."],
    "fr": ["Bonjour ! Oui, il reste des places en juillet.",
           "Le circuit de 5 jours coûte 450 USD par personne, hôtel et repas compris.",
           "Oui, le 14 convient. Je vous envoie le programme.", "Avec plaisir !",
           "Des vêtements chauds, de bonnes chaussures et de la crème solaire."],
    "de": ["Guten Tag! Ja, im Juli gibt es noch Plätze.",
           "Die 5-Tage-Tour kostet 450 USD pro Person, Hotel und Verpflegung inklusive.",
           "Ja, der 14. passt. Ich schicke Ihnen das Programm.", "Gern geschehen!",
           "Warme Kleidung, gute Schuhe und Sonnencreme."],
    "es": ["¡Buenas tardes! Sí, todavía quedan plazas en julio.",
           "El tour de 5 días cuesta 450 USD por persona, con hotel y comidas.",
           "Sí, el 14 está bien. Le envío el programa.", "¡De nada!",
           "Ropa de abrigo, buen calzado y protector solar."],
    "pl": ["Dzień dobry! Tak, w lipcu są jeszcze miejsca.",
           "Wycieczka 5-dniowa kosztuje 450 USD za osobę, z hotelem i wyżywieniem.",
           "Tak, 14. pasuje. Wyślę program.", "Proszę bardzo!",
           "Ciepłe ubrania, dobre buty i krem z filtrem."],
}
GROUP_SUBJECTS = ["Issyk-Kul July group", "Song-Kul trek", "Guides Bishkek", "Family tour August",
                  "Ala-Archa day trip"]
STATUS_TEXTS = ["Sunset over Issyk-Kul", "Закат на Иссык-Куле", "Back from the mountains!"]
MEDIA_TYPES = ("image", "video", "ptt", "document", "sticker", "location")
# Country prefixes for "some other" numbers (Kyrgyz mobile numbers dominate).
PREFIXES = {"en": ["4477", "1415"], "ru": ["7916", "7903"], "ar": ["97150", "96650"],
            "fr": ["336"], "de": ["49151"], "es": ["346"], "pl": ["48501"]}
NUMBER_LENGTH = {"4477": 12, "1415": 11, "7916": 11, "7903": 11, "97150": 12, "96650": 12,
                 "336": 11, "49151": 13, "346": 11, "48501": 11}
"""Digits of a whole international number for each prefix, so that every number is valid."""


def random_number(rng: random.Random, lang: str) -> str:
    """A realistic phone number: mostly `996555xxxxxx`, sometimes the language's country."""
    if rng.random() < 0.6:
        return "996" + rng.choice(["555", "700", "777", "550"]) + f"{rng.randrange(10**6):06d}"
    prefix = rng.choice(PREFIXES[lang])
    rest = NUMBER_LENGTH[prefix] - len(prefix)
    while True:  # national numbering rules (e.g. no US exchange starting with 0 or 1)
        number = prefix + "".join(str(rng.randrange(10)) for _ in range(rest))
        if phonenumbers.is_valid_number(phonenumbers.parse("+" + number)):
            return number


def _message(rng: random.Random, lang: str, from_me: bool, media_ratio: float) -> dict[str, Any]:
    text = rng.choice(AGENT[lang] if from_me else CLIENT[lang])
    if rng.random() >= media_ratio:
        return {"type": "chat", "body": text}
    kind = rng.choice(MEDIA_TYPES)
    spec: dict[str, Any] = {"type": kind, "body": ""}
    if kind in ("image", "video"):
        spec["caption"] = text
    elif kind == "document":
        spec["caption"] = text
        spec["filename"] = rng.choice(["program.pdf", "invoice.pdf", "route-map.pdf"])
    elif kind == "location":
        spec["lat"] = round(42.0 + rng.random(), 5)
        spec["lng"] = round(74.0 + rng.random() * 4, 5)
    return spec


def generate(
    sim: Simulator, acc: Account, *, chats: int = 10, messages: int = 20,
    seed: int | None = None, languages: list[str] | None = None, groups: int | None = None,
    statuses: int = 0, phone_only_chats: int = 0, media_ratio: float = 0.2,
    days: float = 30.0, end_t: int | None = None,
) -> dict[str, Any]:
    """Add `chats` one-to-one chats of `messages` messages each (plus `groups` group chats and
    `statuses` status updates) to the account. `phone_only_chats` of them keep their older half
    on the phone until `sendPeerDataOperationRequest`. Returns counts and the chat ids."""
    langs = list(languages or LANGUAGES)
    for lang in langs:
        if lang not in LANGUAGES:
            raise SimError(400, f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    rng = random.Random(seed if seed is not None else sim.rng.random())
    end = end_t or int(time.time()) - 60
    start = end - int(days * 86400)
    created: list[str] = []
    people: list[str] = []
    total = 0
    for i in range(chats):
        lang = langs[i % len(langs)]
        number = random_number(rng, lang)
        while f"{number}@c.us" in acc.contacts or number == acc.number:
            number = random_number(rng, lang)
        full = rng.choice(NAMES[lang])
        saved = rng.random() < 0.6
        sim.add_contact(acc, number=number, name=full if saved else None,
                        push_name=full.split(" ")[0], picture=rng.random() < 0.5,
                        business=rng.random() < 0.05)
        people.append(number)
        t = start + rng.randrange(3600)
        step = max(1, (end - t) // max(messages, 1))
        specs = []
        for j in range(messages):
            from_me = j % 2 == 1 if rng.random() < 0.85 else rng.random() < 0.5
            spec = _message(rng, lang, from_me, media_ratio)
            t += rng.randrange(1, step + 1)
            spec.update(from_me=from_me, t=min(t, end))
            specs.append(spec)
        phone_only = messages // 2 if i < phone_only_chats else 0
        chat = sim.add_chat(acc, id=number, messages=specs, phone_only=phone_only,
                            archive=rng.random() < 0.1)
        created.append(chat.wid)
        total += len(specs)
    for g in range(chats // 10 if groups is None else groups):
        members = rng.sample(people, k=min(len(people), rng.randrange(2, 6))) if people else []
        gid = f"120363{rng.randrange(10**12):012d}@g.us"
        specs = []
        t = start + rng.randrange(3600)
        for _ in range(messages):
            lang = rng.choice(langs)
            from_me = rng.random() < 0.3 or not members
            spec = _message(rng, lang, from_me, media_ratio)
            t += rng.randrange(60, 7200)
            spec.update(from_me=from_me, t=min(t, end))
            if not from_me:
                spec["author"] = rng.choice(members)
            specs.append(spec)
        chat = sim.add_chat(acc, id=gid, name=GROUP_SUBJECTS[g % len(GROUP_SUBJECTS)],
                            is_group=True, participants=members, messages=specs)
        created.append(chat.wid)
        total += len(specs)
    if statuses and people:
        specs = []
        for _ in range(statuses):
            spec = {"type": rng.choice(["chat", "image"]), "author": rng.choice(people),
                    "t": end - rng.randrange(86400)}
            if spec["type"] == "chat":
                spec["body"] = rng.choice(STATUS_TEXTS)
            else:
                spec["caption"] = rng.choice(STATUS_TEXTS)
            specs.append(spec)
        specs.sort(key=lambda s: s["t"])
        sim.add_chat(acc, id=STATUS_WID, messages=specs)
        total += len(specs)
    return {"chats": created, "messages": total}
