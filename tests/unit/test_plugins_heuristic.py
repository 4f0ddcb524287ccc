"""The heuristic status detector: in each of the seven languages, phrases for each funnel stage
decide that stage, and the reason names the words that matched."""

from __future__ import annotations

import pytest
import wad_heuristic_status
from wad_heuristic_status import decide, find_matches, fold

from tests.support.plugin_helpers import client, message
from wad.config import PluginSettings
from wad.payloads import FUNNEL, StatusDecision
from wad.plugins import detect_status, get_plugin_manager

# (language, expected stage, who writes, text, words the reason must name)
CASES: list[tuple[str, str, str, str, list[str]]] = [
    ("en", "NEW_LEAD", "IN", "Hello! I saw your ad on Instagram", ["Hello", "saw your ad"]),
    ("en", "QUALIFIED", "IN", "We are 4 adults and 2 kids, from 10 to 17 August",
     ["We are 4", "kids"]),
    ("en", "WARMED", "IN", "How much is the Song-Kol trip and what's included?",
     ["How much", "included"]),
    ("en", "PROPOSAL_SENT", "OUT", "Here is our offer: the total price is 1200 USD for two",
     ["Here is our offer", "the total price is"]),
    ("en", "NEGOTIATION", "IN", "It's too expensive, can you give us a discount?",
     ["too expensive", "discount"]),
    ("en", "SOLD", "IN", "I have paid the deposit, here is the bank transfer receipt",
     ["I have paid", "bank transfer"]),
    ("en", "SERVICE", "IN", "The driver is late, we are waiting at the hotel",
     ["driver", "we are waiting"]),
    ("en", "CLOSED", "IN", "Sorry, we decided to cancel, we are not interested anymore",
     ["cancel", "not interested"]),

    ("ru", "NEW_LEAD", "IN", "Добрый день! Увидела вашу рекламу в Инстаграме",
     ["Добрый день", "Увидела вашу рекламу"]),
    ("ru", "QUALIFIED", "IN", "Нас будет четверо, хотим поехать в июле",
     ["Нас будет четверо", "хотим поехать", "в июле"]),
    ("ru", "WARMED", "IN", "Сколько стоит тур и что входит в стоимость?",
     ["Сколько стоит", "входит", "стоимость"]),
    ("ru", "PROPOSAL_SENT", "OUT", "Отправляю вам предложение: стоимость составит 900 долларов",
     ["Отправляю вам предложение", "стоимость составит"]),
    ("ru", "NEGOTIATION", "IN", "Дорого, а скидку можете сделать?", ["Дорого", "скидку"]),
    ("ru", "SOLD", "IN", "Оплатил предоплату, чек отправил в личку",
     ["Оплатил", "чек отправил"]),
    ("ru", "SERVICE", "IN", "Водитель не приехал, мы ждём у гостиницы",
     ["Водитель", "приехал", "ждём"]),
    ("ru", "CLOSED", "IN", "Мы передумали, отмените бронь, пожалуйста",
     ["передумали", "отмените"]),

    ("ar", "NEW_LEAD", "IN", "السلام عليكم، رأيت إعلانكم على إنستغرام",
     ["السلام عليكم", "رأيت إعلان"]),
    ("ar", "QUALIFIED", "IN", "نحن أربعة أشخاص ونريد السفر في أغسطس",
     ["نحن أربعة أشخاص", "نريد السفر", "أغسطس"]),
    ("ar", "WARMED", "IN", "كم سعر الرحلة؟ وهل الفندق مشمول؟", ["كم سعر", "مشمول"]),
    ("ar", "PROPOSAL_SENT", "OUT", "نقدم لكم هذا العرض، السعر الإجمالي 900 دولار",
     ["نقدم لكم", "السعر الإجمالي"]),
    ("ar", "NEGOTIATION", "IN", "السعر غالي، هل يوجد خصم؟", ["غالي", "خصم"]),
    ("ar", "SOLD", "IN", "تم التحويل وأرسلت لكم الإيصال", ["تم التحويل", "الإيصال"]),
    ("ar", "SERVICE", "IN", "السائق متأخر ونحن ننتظر", ["السائق", "ننتظر"]),
    ("ar", "CLOSED", "IN", "للأسف نريد إلغاء الحجز", ["إلغاء"]),

    ("fr", "NEW_LEAD", "IN", "Bonjour, j'ai vu votre annonce sur Facebook",
     ["Bonjour", "j'ai vu votre annonce"]),
    ("fr", "QUALIFIED", "IN", "Nous sommes trois adultes, du 5 au 12 août",
     ["Nous sommes", "adultes", "du 5 au 12"]),
    ("fr", "WARMED", "IN", "Quel est le prix et qu'est-ce qui est inclus ?", ["prix", "inclus"]),
    ("fr", "PROPOSAL_SENT", "OUT", "Voici notre offre : le prix sera de 950 euros par personne",
     ["Voici notre offre", "le prix sera"]),
    ("fr", "NEGOTIATION", "IN", "C'est trop cher, une réduction est possible ?",
     ["trop cher", "réduction"]),
    ("fr", "SOLD", "IN", "J'ai fait le virement de l'acompte ce matin",
     ["J'ai fait le virement"]),
    ("fr", "SERVICE", "IN", "Le chauffeur n'est pas là, nous attendons devant l'hôtel",
     ["chauffeur", "nous attendons"]),
    ("fr", "CLOSED", "IN", "Désolé, nous devons annuler notre séjour", ["annuler"]),

    ("de", "NEW_LEAD", "IN", "Guten Tag, ich habe Ihre Anzeige gesehen",
     ["Guten Tag", "Ihre Anzeige"]),
    ("de", "QUALIFIED", "IN", "Wir sind zu dritt und möchten im August kommen",
     ["Wir sind zu dritt", "im August"]),
    ("de", "WARMED", "IN", "Was kostet die Tour und was ist inklusive?",
     ["Was kostet", "inklusive"]),
    ("de", "PROPOSAL_SENT", "OUT", "Hier ist unser Angebot, der Gesamtpreis beträgt 900 Euro",
     ["Hier ist unser Angebot", "der Gesamtpreis beträgt"]),
    ("de", "NEGOTIATION", "IN", "Das ist zu teuer, gibt es einen Rabatt?",
     ["zu teuer", "Rabatt"]),
    ("de", "SOLD", "IN", "Ich habe die Anzahlung überwiesen", ["Anzahlung überwiesen"]),
    ("de", "SERVICE", "IN", "Der Fahrer ist nicht gekommen, wir warten am Hotel",
     ["Fahrer", "wir warten"]),
    ("de", "CLOSED", "IN", "Leider müssen wir die Reise stornieren", ["stornieren"]),

    ("es", "NEW_LEAD", "IN", "Hola, vi su anuncio en Instagram", ["Hola", "vi su anuncio"]),
    ("es", "QUALIFIED", "IN", "Somos 4 personas y queremos viajar en julio",
     ["Somos", "personas", "queremos viajar", "en julio"]),
    ("es", "WARMED", "IN", "¿Cuánto cuesta el tour y qué está incluido?",
     ["Cuánto cuesta", "incluido"]),
    ("es", "PROPOSAL_SENT", "OUT", "Le ofrecemos este paquete, el precio es 900 dólares",
     ["Le ofrecemos", "el precio es"]),
    ("es", "NEGOTIATION", "IN", "Es muy caro, ¿hay algún descuento?", ["caro", "descuento"]),
    ("es", "SOLD", "IN", "Ya pagué la reserva, les envío el comprobante", ["Ya pagué"]),
    ("es", "SERVICE", "IN", "El conductor no ha llegado, estamos esperando en el hotel",
     ["conductor", "esperando"]),
    ("es", "CLOSED", "IN", "Lo siento, tenemos que cancelar el viaje", ["cancelar"]),

    ("pl", "NEW_LEAD", "IN", "Dzień dobry, widziałam ogłoszenie na Facebooku",
     ["Dzień dobry", "ogłoszenie"]),
    ("pl", "QUALIFIED", "IN", "Jest nas pięcioro, chcemy jechać w sierpniu",
     ["Jest nas", "chcemy jechać", "w sierpniu"]),
    ("pl", "WARMED", "IN", "Ile kosztuje wycieczka i co jest w cenie?",
     ["Ile kosztuje", "w cenie"]),
    ("pl", "PROPOSAL_SENT", "OUT", "Proponujemy ten pakiet, cena wynosi 900 dolarów",
     ["Proponujemy", "cena wynosi"]),
    ("pl", "NEGOTIATION", "IN", "To za drogo, czy jest jakaś zniżka?", ["za drogo", "zniżka"]),
    ("pl", "SOLD", "IN", "Zapłaciłem zaliczkę przelewem", ["Zapłaciłem", "przelewem"]),
    ("pl", "SERVICE", "IN", "Kierowca nie przyjechał, czekamy przed hotelem",
     ["Kierowca", "przyjechał", "czekamy"]),
    ("pl", "CLOSED", "IN", "Niestety musimy zrezygnować z wyjazdu", ["zrezygnować"]),
]


def test_every_language_has_a_case_for_every_stage() -> None:
    covered = {(lang, stage) for lang, stage, *_ in CASES}
    assert covered == {(lang, stage) for lang in ("en", "ru", "ar", "fr", "de", "es", "pl")
                       for stage in FUNNEL}


@pytest.mark.parametrize(("language", "stage", "direction", "text", "words"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_phrases_decide_their_stage_and_the_reason_names_the_words(
        language: str, stage: str, direction: str, text: str, words: list[str]) -> None:
    history = [message(text, direction=direction)]
    if direction == "OUT":  # a proposal answers the client's question
        history.insert(0, message("?"))
    decision = decide(history, current_status="NEW_LEAD")
    assert decision is not None
    assert decision.status == stage, decision.reason
    assert decision.detector == "heuristic_status"
    assert decision.confidence >= 0.5
    assert decision.reason.startswith(f"{stage}: matched ")
    main = decision.reason.split(" (also ")[0]
    for word in words:
        assert f"«{word}»" in main


def test_the_whole_conversation_counts_and_later_evidence_moves_it_on() -> None:
    history = [message("How much is the tour?"), message("Ok, we take it, I paid the deposit")]
    decision = decide(history, current_status="WARMED")
    assert decision is not None
    assert decision.status == "SOLD"
    assert "also WARMED: «How much»" in decision.reason
    # An objection several messages back still stands: nothing after it moved the deal on.
    history = [message("Is there a discount?"), message("hmm"), message("let me think"),
               message("my wife asks too")]
    decision = decide(history, current_status="WARMED")
    assert decision is not None
    assert decision.status == "NEGOTIATION"
    assert decision.confidence >= 0.5
    # A greeting alone is weak evidence.
    greeting = decide([message("Hello!")], current_status=None)
    assert greeting is not None
    assert greeting.status == "NEW_LEAD"
    assert greeting.confidence < decision.confidence


def test_our_messages_are_evidence_a_price_a_lower_price_a_confirmation() -> None:
    offer = [message("Two of us, 10 days in July"),
             message("Our plan for you: 10 days, guesthouses and a driver, 1 900 USD in total",
                     direction="OUT")]
    decision = decide(offer, current_status="QUALIFIED")
    assert decision is not None
    assert (decision.status, decision.reason) == (
        "PROPOSAL_SENT", "PROPOSAL_SENT: matched «1 900 USD» (also QUALIFIED: «Two of us», «10 days», "
        "«in July»)")
    lowered = [*offer, message("hmm"), message("We can shorten it to 8 days, that brings it to "
                                               "1 500 USD", direction="OUT")]
    decision = decide(lowered, current_status="PROPOSAL_SENT")
    assert decision is not None
    assert decision.status == "NEGOTIATION"
    confirmed = [*lowered, message("Payment received, your booking is confirmed!",
                                   direction="OUT")]
    decision = decide(confirmed, current_status="NEGOTIATION")
    assert decision is not None
    assert decision.status == "SOLD"


@pytest.mark.parametrize(("request_text", "done"), [
    ("The deposit is 200 USD, IBAN KG12 1090 0000 1234 5678", "Sent it"),
    ("Предоплата 10 000 сом, реквизиты: МБанк +996 555 000 111", "Готово"),
    ("Pour réserver, un acompte de 300 € sur l'IBAN FR76 3000 4000 0312", "C'est fait !"),
    ("Bitte 30 % Anzahlung auf DE12 5001 0517 0648 4898 90", "Erledigt"),
    ("El anticipo es de 300 USD a la cuenta KG57 1280 0000 0098", "Listo"),
    ("Zaliczka 500 zł, numer konta PL61 1090 1014 0000 0712", "Zrobione"),
    ("الدفعة المقدمة ٤٠٠ دولار على هذا الحساب", "أرسلت المبلغ"),
])
def test_a_done_after_we_asked_for_a_payment_means_paid(request_text: str, done: str) -> None:
    asked = [message(request_text, direction="OUT"), message(done)]
    decision = decide(asked, current_status="PROPOSAL_SENT")
    assert decision is not None
    assert decision.status == "SOLD", decision.reason
    # The same words with no payment asked for say nothing of one.
    alone = decide([message("Can we come in July?"), message(done)],
                   current_status="PROPOSAL_SENT")
    assert alone is None or alone.status != "SOLD"


def test_a_negotiation_can_close_unsold_and_a_closed_client_can_come_back() -> None:
    history = [message("The total price is 2 600 USD", direction="OUT"),
               message("That is more than we have, could we drop the last night?"),
               message("That would bring it to 2 300 USD", direction="OUT"),
               message("Thanks for trying, but we'll go to Georgia instead")]
    decision = decide(history, current_status="NEGOTIATION")
    assert decision is not None
    assert decision.status == "CLOSED"
    back = decide([*history, message("Hi again! How much is the Song-Kol trek next summer?")],
                  current_status="CLOSED")
    assert back is not None
    assert back.status == "WARMED"


def test_the_detector_moves_forward_only_except_to_and_from_closed() -> None:
    assert decide([message("How much is it?")], current_status="SOLD") is None
    closed = decide([message("We want to cancel")], current_status="SOLD")
    assert closed is not None
    assert closed.status == "CLOSED"
    reopened = decide([message("Hello again! What's the price of the Issyk-Kul tour?")],
                      current_status="CLOSED")
    assert reopened is not None
    assert reopened.status == "WARMED"


def test_our_own_messages_only_count_as_proposals_or_confirmations() -> None:
    # Our "how much" is not the client's interest.
    assert decide([message("How much would you like to spend?", direction="OUT")],
                  current_status="NEW_LEAD") is None
    confirmed = decide([message("Payment received, your booking is confirmed!",
                                direction="OUT")], current_status="NEGOTIATION")
    assert confirmed is not None
    assert confirmed.status == "SOLD"


def test_nothing_matched_means_no_decision() -> None:
    assert decide([message("👍"), message("ok")], current_status=None) is None
    assert decide([], current_status=None) is None


def test_folding_ignores_case_accents_and_letter_variants() -> None:
    assert fold("Réduction ÉTÉ") == "reduction ete"
    assert fold("Zapłaciłem") == "zaplacilem"
    assert fold("Всё ЗАКАЗАЛИ") == "все заказали"
    assert fold("إلغاء الرحلة") == "الغاء الرحله"
    [match] = find_matches("Y A-T-IL UNE REDUCTION?", ours=False, languages=["fr"])
    assert (match.stage, match.words) == ("NEGOTIATION", "REDUCTION")


async def test_it_runs_as_the_last_status_detector() -> None:
    pm = get_plugin_manager(PluginSettings(
        entry_points=False, config={"heuristic_status": {"languages": ["de"]}}),
        builtins=False, bundled=False)
    pm.register(wad_heuristic_status, "heuristic_status")
    decision = await detect_status(pm, client=client(), messages=[
        message("Was kostet die Tour?")], current_status="QUALIFIED")
    assert decision == StatusDecision(status="WARMED", confidence=0.65,
                                      reason="WARMED: matched «Was kostet»",
                                      detector="heuristic_status")
    # Only German patterns were configured.
    assert await detect_status(pm, client=client(), messages=[message("How much?")],
                               current_status="QUALIFIED") is None
