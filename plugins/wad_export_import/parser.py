"""Reading WhatsApp's "Export chat" files: the `.txt` a phone writes (alone, in a folder with its
media, or inside the `.zip` it shares), in the line formats of Android and iPhone in different
locales.

A message line starts with a date and a time, then (Android) ` - ` or (iPhone) the bracketed
stamp and a space, then `Author: text`; the lines after it, up to the next message line, belong
to it (multi-line messages, captions). Formats seen in the wild and read here:

    1/15/24, 9:05 PM - John: Hello                      Android, en-US (month first, 12 h)
    15/01/2024, 21:05 - John: Hello                     Android, en-GB, es, ... (day first)
    15.01.24, 21:05 - Иван: Привет                      Android, de, ru, pl (dots)
    15/01/2024 à 21:05 - Pierre: Bonjour                Android, fr
    15/1/24, 9:05 p. m. - Juan: Hola                    Android, es (12 h, "p. m.")
    [1/15/24, 9:05:33 PM] John: Hello                   iPhone, en-US (seconds, brackets)
    [15.01.24, 21:05:33] Jonas: Hallo                   iPhone, de, ru
    [2024-01-15, 21:05:33] Erik: Hej                    iPhone, ISO dates

Whether dates are day or month first is decided from the whole file (a day above 12 settles it;
else the order in which the times run forwards; else the locale's separator), or given.

Lines without an author are notices (encryption, calls, security codes) and are skipped, as are
notices and deleted messages written as an author's line. "<Media omitted>" and "image omitted"
become media messages of their type without a file; attached files (`<attached: ...>`,
`... (file attached)`) become media messages naming the file, with the text after them as the
caption. A line that cannot be read is reported with its file and line number
(`ExportedChat.problems`), never dropped silently.

Hostile files are refused whole, with the reason, before anything of them is read into the
import (`wad.config.ImportSettings` sets the limits): a text or zip over the size limits, a zip
with too many entries or an entry compressed beyond the ratio limit (a zip bomb), a zip entry
named outside the zip (`../x`, `/x`), and a chat naming an attachment outside its own folder
(such a name is never looked up on disk).
"""

from __future__ import annotations

import mimetypes
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wad.config import ImportSettings
from wad.payloads import ImportedChat, ImportedMessage

# What the export's text may hold around names and numbers: direction marks and isolates.
_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_STRIP_MARKS = str.maketrans("", "", _MARKS)
# Arabic-Indic and Persian digits, and the Arabic comma, as ASCII (same length, so positions in
# the translated line are positions in the original).
_ASCII = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹،", "01234567890123456789,")

_M = "[\u200e\u200f]*"  # Arabic locales put direction marks between a date's parts
_HEADER = re.compile(
    rf"^[{_MARKS}]*(?P<open>\[)?{_M}"
    rf"(?P<date>\d{{1,4}}{_M}(?P<sep>[./-]){_M}\d{{1,2}}{_M}(?P=sep){_M}\d{{1,4}}){_M}\.?"
    r"(?:,\s*|\s+à\s+|\s+um\s+|\s+)"
    rf"{_M}(?P<time>\d{{1,2}}[:.]\d{{2}}(?:[:.]\d{{2}})?)"
    r"(?:[\s\u202f\u00a0]*(?P<ampm>[AaPp]\.?[\s\u202f\u00a0]?[Mm]\.?|ص|م))?"
    rf"{_M}(?(open)\][\s\u202f\u00a0]?|\s[-–]\s)"
    r"(?P<rest>.*)$", re.DOTALL)
# Looks like the start of a message line (a date and a time) even though it did not parse.
_HEADER_LIKE = re.compile(rf"^[{_MARKS}]*\[?\d{{1,4}}[./-]\d{{1,2}}[./-]\d{{1,4}},?\s+\d{{1,2}}[:.]\d{{2}}")
_AUTHOR = re.compile(r"^(?P<author>[^:\n]{1,120}?):[ \u00a0]?(?P<text>.*)$", re.DOTALL)

# How WhatsApp names an export's file (Android's `.txt`) or the zip it shares (iPhone's
# "WhatsApp Chat - X.zip", in most locales): the name is the contact's.
_TITLES = [re.compile(p, re.IGNORECASE) for p in (
    r"^WhatsApp Chat with (?P<name>.+)$", r"^WhatsApp[- ]Chat mit (?P<name>.+)$",
    r"^Чат WhatsApp с (?P<name>.+)$", r"^WhatsApp[- ]чат с (?P<name>.+)$",
    r"^Чат WhatsApp з (?P<name>.+)$", r"^Chat de WhatsApp con (?P<name>.+)$",
    r"^Discussion WhatsApp avec (?P<name>.+)$", r"^Czat WhatsApp z (?P<name>.+)$",
    r"^Conversa do WhatsApp com (?P<name>.+)$", r"^Chat WhatsApp con (?P<name>.+)$",
    r"^WhatsApp[- ]chat met (?P<name>.+)$", r"^(?:دردشة|محادثة) واتساب مع (?P<name>.+)$",
    r"^(?P<name>.+) ile WhatsApp Sohbeti$",
    r"^(?:WhatsApp[- ]Chat|Чат WhatsApp|WhatsApp[- ]чат|Chat de WhatsApp|Discussion WhatsApp|"
    r"Czat WhatsApp|Conversa do WhatsApp|Chat WhatsApp|(?:دردشة|محادثة) واتساب)"
    r"\s*[-–]\s*(?P<name>.+)$",
)]

# Notices an export writes without an author, or as the contact's line starting with a mark.
_NOTICES = [re.compile(p, re.IGNORECASE) for p in (
    r"end-to-end encrypted", r"сквозным шифрованием", r"ende-zu-ende-verschlüsselt",
    r"cifrad[oa]s? de extremo a extremo", r"chiffrés de bout en bout",
    r"szyfrowane end-to-end|szyfrowaniem end-to-end", r"مشفرة تمام|مشفّرة تمام",
    r"security code .*changed", r"код безопасности", r"sicherheitsnummer",
    r"código de seguridad", r"code de sécurité", r"kod zabezpieczeń", r"رمز الأمان",
    r"changed (their|your) phone number", r"blocked this contact", r"unblocked this contact",
    r"disappearing messages", r"исчезающие сообщения", r"selbstlöschende nachrichten",
    r"mensajes temporales", r"messages éphémères", r"znikające wiadomości",
    r"الرسائل المؤقتة",
)]
_DELETED = frozenset(s.casefold() for s in (
    "This message was deleted", "You deleted this message", "Сообщение удалено",
    "Данное сообщение удалено", "Вы удалили это сообщение", "Diese Nachricht wurde gelöscht",
    "Du hast diese Nachricht gelöscht", "Se eliminó este mensaje", "Eliminaste este mensaje",
    "Este mensaje fue eliminado", "Ce message a été supprimé", "Vous avez supprimé ce message",
    "Ta wiadomość została usunięta", "Usunięto tę wiadomość", "Usunąłeś tę wiadomość",
    "Usunęłaś tę wiadomość", "تم حذف هذه الرسالة", "لقد حذفت هذه الرسالة", "حذفت هذه الرسالة",
    "Mensagem apagada", "Você apagou esta mensagem", "Questo messaggio è stato eliminato",
))
# Calls: "Missed voice call", "Video call, 12 min", "Verpasster Sprachanruf, Zum Zurückrufen
# tippen": the phrase names the kind and whether it was missed; what follows is a duration, a
# hint to call back, or "no answer".
_CALLS: dict[str, tuple[str, bool]] = {s.casefold(): v for s, v in {
    "Missed voice call": ("voice", True), "Missed video call": ("video", True),
    "Missed group voice call": ("voice", True), "Missed group video call": ("video", True),
    "Voice call": ("voice", False), "Video call": ("video", False),
    "Verpasster Sprachanruf": ("voice", True), "Verpasster Videoanruf": ("video", True),
    "Verpasster Anruf": ("voice", True), "Sprachanruf": ("voice", False),
    "Videoanruf": ("video", False),
    "Пропущенный аудиозвонок": ("voice", True), "Пропущенный видеозвонок": ("video", True),
    "Пропущенный звонок": ("voice", True), "Аудиозвонок": ("voice", False),
    "Видеозвонок": ("video", False), "Голосовой звонок": ("voice", False),
    "Llamada de voz perdida": ("voice", True), "Videollamada perdida": ("video", True),
    "Llamada perdida": ("voice", True), "Llamada de voz": ("voice", False),
    "Videollamada": ("video", False),
    "Appel vocal manqué": ("voice", True), "Appel vidéo manqué": ("video", True),
    "Appel vocal": ("voice", False), "Appel vidéo": ("video", False),
    "Nieodebrane połączenie głosowe": ("voice", True),
    "Nieodebrane połączenie wideo": ("video", True),
    "Nieodebrane połączenie": ("voice", True), "Połączenie głosowe": ("voice", False),
    "Połączenie wideo": ("video", False),
    "مكالمة صوتية فائتة": ("voice", True), "مكالمة فيديو فائتة": ("video", True),
    "مكالمة فائتة": ("voice", True), "مكالمة صوتية": ("voice", False),
    "مكالمة فيديو": ("video", False),
    "Chamada de voz perdida": ("voice", True), "Chamada de vídeo perdida": ("video", True),
    "Chamada de voz": ("voice", False), "Chamada de vídeo": ("video", False),
}.items()}
_CALL = re.compile(
    r"^(?P<phrase>" + "|".join(sorted(map(re.escape, _CALLS), key=len, reverse=True))
    + r")(?:\s*[,،•·-]\s*(?P<rest>.*))?$", re.IGNORECASE)
_CALL_HINTS = re.compile(
    r"^(tap to call back|click to call back|zum zurückrufen tippen|нажмите, чтобы перезвонить|"
    r"toca para (devolver la llamada|llamar)|appuyez pour rappeler|dotknij, aby oddzwonić|"
    r"(انقر|اضغط) (لمعاودة الاتصال|للاتصال)|toque para ligar de volta)\.?$", re.IGNORECASE)
_NO_ANSWER = re.compile(
    r"^(no answer|nicht angenommen|keine antwort|нет ответа|не отвечен|sin respuesta|"
    r"pas de réponse|brak odpowiedzi|nie odebrano|لا يوجد رد|لم يتم الرد|sem resposta)\.?$",
    re.IGNORECASE)
_UNITS = {
    3600: r"h|hr|hrs|hour|hours|std\.?|stunden?|ч\.?|час(?:а|ов)?|godz\.?|heures?|horas?|"
          r"ساعة|ساعات",
    60: r"min\.?|mins|minutes?|minuten?|мин\.?|минут[аы]?|minutos?|minuty?|minut|دقيقة|دقائق",
    1: r"s|sec\.?|secs|seconds?|sek\.?|sekunden?|сек\.?|секунд[аы]?|segundos?|secondes?|"
       r"sekund[ay]?|ثانية|ثوان",
}
_DURATION_PART = re.compile(r"(\d+)\s*(" + "|".join(f"(?:{u})" for u in _UNITS.values())
                            + r")(?=\s|$|,)", re.IGNORECASE)
_UNIT_RES = {seconds: re.compile(rf"^(?:{units})$", re.IGNORECASE)
             for seconds, units in _UNITS.items()}
# Android without media: one placeholder for any file.
_MEDIA_OMITTED = frozenset(s.casefold() for s in (
    "<Media omitted>", "<Без медиафайлов>", "<Medien ausgeschlossen>", "<Multimedia omitido>",
    "<Médias omis>", "<Pominięto multimedia>", "<تم استبعاد الوسائط>", "<Arquivo de mídia oculto>",
    "<Media omessi>",
))
# A view-once photo or video: Android writes `null`, iPhone names it.
_VIEW_ONCE_ANDROID = "null"
_VIEW_ONCE: dict[str, str] = {s.casefold(): kind for s, kind in {
    "view once photo omitted": "image", "view once video omitted": "video",
    "view once voice message omitted": "audio",
    "Einmalansicht-Foto weggelassen": "image", "Einmalansicht-Video weggelassen": "video",
    "фото для однократного просмотра отсутствует": "image",
    "видео для однократного просмотра отсутствует": "video",
    "foto de visualización única omitida": "image",
    "video de visualización única omitido": "video",
    "photo à vue unique omise": "image", "vidéo à vue unique omise": "video",
    "pominięto zdjęcie do jednorazowego wyświetlenia": "image",
    "pominięto film do jednorazowego wyświetlenia": "video",
    "تم استبعاد صورة للعرض مرة واحدة": "image", "تم استبعاد فيديو للعرض مرة واحدة": "video",
}.items()}
# iPhone without media: the kind of file is named.
_KIND_OMITTED: dict[str, str] = {
    "image omitted": "image", "video omitted": "video", "audio omitted": "audio",
    "sticker omitted": "sticker", "gif omitted": "video", "document omitted": "document",
    "contact card omitted": "vcard",
    "изображение отсутствует": "image", "видео отсутствует": "video",
    "аудиофайл отсутствует": "audio", "стикер отсутствует": "sticker",
    "gif отсутствует": "video", "документ отсутствует": "document",
    "карточка контакта отсутствует": "vcard",
    "bild weggelassen": "image", "video weggelassen": "video", "audio weggelassen": "audio",
    "sticker weggelassen": "sticker", "gif weggelassen": "video",
    "dokument weggelassen": "document", "kontaktkarte weggelassen": "vcard",
    "imagen omitida": "image", "video omitido": "video", "vídeo omitido": "video",
    "audio omitido": "audio", "sticker omitido": "sticker", "gif omitido": "video",
    "documento omitido": "document", "tarjeta de contacto omitida": "vcard",
    "image absente": "image", "vidéo absente": "video", "audio omis": "audio",
    "autocollant omis": "sticker", "gif retiré": "video", "document omis": "document",
    "carte de contact omise": "vcard",
    "pominięto obraz": "image", "pominięto wideo": "video", "pominięto dźwięk": "audio",
    "pominięto naklejkę": "sticker", "pominięto dokument": "document",
    "pominięto wizytówkę": "vcard",
    "تم استبعاد الصورة": "image", "تم استبعاد الفيديو": "video", "تم استبعاد الصوت": "audio",
    "تم استبعاد الملصق": "sticker", "تم استبعاد المستند": "document",
}
_ATTACHED_IPHONE = re.compile(
    r"^<(?:attached|прикреплено|anhang|adjunto|pièce jointe|załącznik|مرفق)\s?:\s*"
    r"(?P<file>[^<>]+?)>$", re.IGNORECASE)
_ATTACHED_ANDROID = re.compile(
    r"^(?P<file>\S[^\n]*?\.\w{1,5}) \((?:file attached|файл прикреплён|файл прикреплен|"
    r"datei angehängt|archivo adjunto|fichier joint|załączono plik|ملف مرفق|arquivo anexado)\)$",
    re.IGNORECASE)
# A shared location: the locale's word (Android) or a place's name and address before a maps
# link; a live location has no link.
_LOCATION_WORD = (r"location|местоположение|геопозиция|геолокация|standort|ubicación|"
                  r"ubicacion|position|localisation|lokalizacja|الموقع|localização|posizione")
_LOCATION = re.compile(
    rf"^(?:(?:{_LOCATION_WORD})\s?:\s*|(?P<place>.+?)\s?:?\s+)(?P<url>https?://\S+)$",
    re.IGNORECASE)
_MAPS = re.compile(r"^https?://(?:maps\.google\.[a-z.]+|www\.google\.[a-z.]+/maps|"
                   r"goo\.gl/maps|maps\.app\.goo\.gl|maps\.apple\.com)\b", re.IGNORECASE)
_COORDS = re.compile(r"(?:[?&](?:q|ll|sll)=|@|/place/)(?P<lat>-?\d{1,2}\.\d+),\s*"
                     r"(?P<lng>-?\d{1,3}\.\d+)")
_LIVE_LOCATION = re.compile(
    r"^(live location shared|standort in echtzeit geteilt|live-standort geteilt|"
    r"трансляция геопозиции|геоданные в реальном времени|ubicación en tiempo real compartida|"
    r"position en direct partagée|udostępniono lokalizację na żywo|"
    r"تمت مشاركة الموقع المباشر)\.?$", re.IGNORECASE)
_EDITED = re.compile(
    r"[\s\u200e\u200f]*<(?:This message was edited|Сообщение изменено|Сообщение было изменено|"
    r"Diese Nachricht wurde bearbeitet|Se editó este mensaje\.?|Ce message a été modifié|"
    r"Ta wiadomość została edytowana|Wiadomość edytowana|تم تعديل هذه الرسالة|"
    r"Mensagem editada|Questo messaggio è stato modificato)>\s*$",
    re.IGNORECASE)
_EXTRA_TYPES = {".opus": "audio/ogg", ".webp": "image/webp", ".vcf": "text/vcard",
                ".heic": "image/heic", ".m4a": "audio/mp4"}


class ExportedMessage(ImportedMessage, frozen=True, kw_only=True):
    """A message of an exported chat, with the author as written and its line in the file."""

    author: str
    line: int


class ExportedChat(ImportedChat, frozen=True, kw_only=True):
    """One exported chat. Beside `ImportedChat`'s fields (`is_group`, `problems` as
    `FILE:LINE: why`): the file it came from, the authors in order of appearance, and how many
    notices were skipped."""

    file: str
    authors: list[str] = []
    notices: int = 0


@dataclass(frozen=True)
class ExportOptions:
    """How to read exports: the owner's name (`--me`), the linked account's push name and
    number (from the organization's session record), the time zone of the times, the date
    order when the file cannot tell, and numbers of contacts shown by name."""

    me: str | None = None
    account_name: str | None = None
    account_phone: str | None = None
    tz: tzinfo | None = None
    date_order: str | None = None
    phones: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, str]) -> ExportOptions:
        """From `ImportRequest.options`: `me`, `account_name`, `account_phone`, `timezone`,
        `date_order`, `phone:NAME`."""
        tz: tzinfo | None = None
        if options.get("timezone"):
            try:
                tz = ZoneInfo(options["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {options['timezone']!r} (use an IANA "
                                 "name such as Asia/Bishkek)") from None
        order = (options.get("date_order") or "").upper() or None
        if order not in (None, "DMY", "MDY", "YMD"):
            raise ValueError(f"date order must be DMY, MDY or YMD, not {order!r}")
        phones = {_key(name[6:]): number for name, number in options.items()
                  if name.startswith("phone:")}
        return cls(me=options.get("me") or None,
                   account_name=options.get("account_name") or None,
                   account_phone=options.get("account_phone") or None, tz=tz, date_order=order, phones=phones)

    def zone(self) -> tzinfo:
        tz = self.tz or datetime.now().astimezone().tzinfo
        assert tz is not None
        return tz


def _key(name: str) -> str:
    """A name as compared: without marks, extra spaces or case."""
    return " ".join(name.translate(_STRIP_MARKS).split()).casefold()


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def looks_like_number(text: str) -> bool:
    """`+996 555 123 456`, as exports show contacts the phone has not saved."""
    clean = text.translate(_STRIP_MARKS).strip()
    return bool(re.fullmatch(r"\+?[\d\s()\-.\u00a0]{6,}", clean)) and len(_digits(clean)) >= 7


def _same(a: str, b: str) -> bool:
    if looks_like_number(a) and looks_like_number(b):
        return _digits(a) == _digits(b)
    return _key(a) == _key(b)


def title_name(file_name: str) -> str | None:
    """The contact named by an export's file name (`WhatsApp Chat with Anna.txt`), if any."""
    stem = Path(file_name).stem.translate(_STRIP_MARKS).strip()
    stem = re.sub(r"\s*\(\d+\)$", "", stem)
    for pattern in _TITLES:
        match = pattern.match(stem)
        if match:
            return match.group("name").strip() or None
    return None


# Reading lines --------------------------------------------------------------------------------


@dataclass
class _Entry:
    line: int
    date: str
    sep: str
    time: str
    ampm: str | None
    bracketed: bool
    lines: list[str]


def _split_lines(text: str, label: str, problems: list[str]) -> list[_Entry]:
    entries: list[_Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip("\ufeff")
        ascii_line = line.translate(_ASCII)
        match = _HEADER.match(ascii_line)
        if match:
            entries.append(_Entry(
                line=number, date=match.group("date").translate(_STRIP_MARKS), sep=match.group("sep"),
                time=match.group("time"), ampm=match.group("ampm"),
                bracketed=match.group("open") is not None,
                lines=[line[match.start("rest"):]]))
            continue
        if not entries:
            if line.translate(_STRIP_MARKS).strip():
                problems.append(f"{label}:{number}: not a message line (nothing before it to "
                                f"belong to): {_snippet(line)}")
            continue
        if _HEADER_LIKE.match(ascii_line):
            problems.append(f"{label}:{number}: looks like the start of a message but does not "
                            f"parse; kept as text of the message of line {entries[-1].line}: "
                            f"{_snippet(line)}")
        entries[-1].lines.append(line)
    return entries


def _snippet(line: str, width: int = 60) -> str:
    text = line.translate(_STRIP_MARKS).strip()
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _parts(entry: _Entry) -> tuple[int, int, int]:
    a, b, c = (int(p) for p in entry.date.split(entry.sep))
    return a, b, c


def _year(value: int) -> int:
    return value + 2000 if value < 100 else value


def _date(parts: tuple[int, int, int], order: str) -> date | None:
    a, b, c = parts
    y, m, d = {"DMY": (c, b, a), "MDY": (c, a, b), "YMD": (a, b, c)}[order]
    try:
        return date(_year(y), m, d)
    except ValueError:
        return None


def _clock(entry: _Entry) -> tuple[int, int, int] | None:
    pieces = [int(p) for p in re.split(r"[:.]", entry.time)]
    hour, minute, second = pieces[0], pieces[1], pieces[2] if len(pieces) > 2 else 0
    if entry.ampm:
        marker = re.sub(r"[\s.\u202f\u00a0]", "", entry.ampm).lower()
        pm = marker in ("pm", "م")
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if pm else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour, minute, second


def date_order(entries: Sequence[_Entry], given: str | None = None) -> str:
    """`DMY`, `MDY` or `YMD` for the file's dates (see the module's docstring)."""
    if given:
        return given
    parts = [_parts(e) for e in entries]
    if parts and all(e.date.split(e.sep)[0].__len__() == 4 for e in entries):
        return "YMD"
    valid = {order: sum(_date(p, order) is not None for p in parts) for order in ("DMY", "MDY")}
    best = max(valid.values())
    candidates = [order for order, count in valid.items() if count == best]
    if len(candidates) == 1:
        return candidates[0]

    def backwards(order: str) -> int:
        stamps = [(_date(p, order), _clock(e)) for p, e in zip(parts, entries, strict=True)]
        known = [(d, c) for d, c in stamps if d is not None and c is not None]
        return sum(1 for x, y in zip(known, known[1:], strict=False) if y < x)

    runs = {order: backwards(order) for order in candidates}
    if runs["DMY"] != runs["MDY"]:
        return min(runs, key=lambda order: runs[order])
    # Nothing in the file tells: dots are day-first everywhere; a 12-hour clock with slashes and
    # a plain AM/PM is the US habit (Spanish "p. m." and Arabic "م" are day-first); otherwise
    # day-first, as most of the world writes.
    if entries and entries[0].sep != "." and any(
            e.ampm and e.ampm.upper() in ("AM", "PM") for e in entries):
        return "MDY"
    return "DMY"


# Turning entries into messages ----------------------------------------------------------------


@dataclass
class _Parsed:
    line: int
    sent_at: datetime
    author: str
    text: str


def _media_type(file_name: str) -> str:
    upper = Path(file_name).name.upper()
    ext = Path(file_name).suffix.lower()
    if "STICKER" in upper or upper.startswith("STK-") or ext == ".webp":
        return "sticker"
    if "GIF" in upper:
        return "video"
    if "PHOTO" in upper or upper.startswith("IMG-") or ext in (".jpg", ".jpeg", ".png", ".heic"):
        return "image"
    if "VIDEO" in upper or upper.startswith("VID-") or ext in (".mp4", ".mov", ".3gp", ".mkv"):
        return "video"
    if ("AUDIO" in upper or upper.startswith(("PTT-", "AUD-"))
            or ext in (".opus", ".ogg", ".m4a", ".mp3", ".aac", ".amr", ".wav")):
        return "audio"
    if ext == ".vcf":
        return "vcard"
    return "document"


def _mimetype(file_name: str) -> str | None:
    ext = Path(file_name).suffix.lower()
    return _EXTRA_TYPES.get(ext) or mimetypes.guess_type(file_name)[0]


MediaLookup = Callable[[str], int | None]
"""The size of a media file shipped with the export (None: not there)."""


def _duration(text: str) -> int | None:
    """Seconds of a call's duration (`12 min`, `1 hr 5 min`, `0:45`, `1:02:03`), else None."""
    text = text.translate(_ASCII).translate(_STRIP_MARKS).strip().rstrip(".")
    clock = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{2})", text)
    if clock:
        hours, minutes, seconds = (int(p) if p else 0 for p in clock.groups())
        return hours * 3600 + minutes * 60 + seconds
    parts = list(_DURATION_PART.finditer(text))
    if not parts or _DURATION_PART.sub("", text).strip(" ,"):
        return None
    total = 0
    for part in parts:
        unit = next(sec for sec, pattern in _UNIT_RES.items() if pattern.match(part.group(2)))
        total += int(part.group(1)) * unit
    return total


def _call(text: str) -> dict[str, object] | None:
    """The facts of a call line (kind, missed, duration), or None when it is not one."""
    match = _CALL.match(text)
    if match is None:
        return None
    kind, missed = _CALLS[match.group("phrase").casefold()]
    facts: dict[str, object] = {"call": kind, "missed": missed}
    rest = (match.group("rest") or "").strip()
    if _CALL_HINTS.match(rest):
        rest = ""  # "Нажмите, чтобы перезвонить" holds a comma of its own
    for piece in re.split(r"\s*[,،•·]\s*", rest):
        piece = piece.strip()
        if not piece or _CALL_HINTS.match(piece):
            continue
        if _NO_ANSWER.match(piece):
            facts["missed"] = True
            continue
        seconds = _duration(piece)
        if seconds is None:
            return None  # "Video call tomorrow?" is a text
        facts["duration_s"] = seconds
    return facts


def _location(text: str) -> dict[str, object] | None:
    """The fields of a shared location (`location: https://maps...`, `Place (address):
    https://maps...`, `live location shared`), or None."""
    if _LIVE_LOCATION.match(text):
        return {"type": "location", "media": {"live": True}}
    match = _LOCATION.match(text)
    if match is None:
        return None
    url, place = match.group("url"), match.group("place")
    coords = _COORDS.search(url)
    if place is not None and not (_MAPS.match(url) and coords):
        return None  # text with a link in it, not a shared place
    media: dict[str, object] = {"url": url}
    if coords:
        media["latitude"] = float(coords.group("lat"))
        media["longitude"] = float(coords.group("lng"))
    if place:
        media["name"] = place.strip()
    return {"type": "location", "caption": place.strip() if place else None, "media": media}


class _Outside(Exception):
    """An attachment named outside the export's folder."""


def plain_name(name: str) -> bool:
    """Whether NAME is a bare file name (no folder, no `..`): the only attachment names an
    export holds, and the only ones looked up."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _content(text: str, media: MediaLookup) -> dict[str, object] | None:
    """The message fields of an author's text; None for a notice or a deleted message."""
    text = _EDITED.sub("", text)
    first, _, rest = text.partition("\n")
    first_clean = first.translate(_STRIP_MARKS).strip()
    folded = first_clean.casefold()
    if not rest and folded.rstrip(".") in _DELETED:
        return None
    if first.startswith("\u200e") and any(p.search(first_clean) for p in _NOTICES):
        return None
    if not rest:
        call = _call(first_clean)
        if call is not None:
            return {"type": "call", "media": call}
        if folded == _VIEW_ONCE_ANDROID:
            return {"type": "other", "media": {"view_once": True, "omitted": True}}
        if folded in _VIEW_ONCE:
            return {"type": _VIEW_ONCE[folded], "media": {"view_once": True, "omitted": True}}
    caption = rest.translate(_STRIP_MARKS).strip() or None
    if folded in _MEDIA_OMITTED:
        return {"type": "other", "caption": caption, "media": {"omitted": True}}
    for phrase, kind in _KIND_OMITTED.items():
        if folded.endswith(phrase):
            facts: dict[str, object] = {"omitted": True}
            named = first_clean[: len(first_clean) - len(phrase)].split("•")[0].strip()
            if named:
                facts["filename"] = named
            return {"type": kind, "caption": caption, "media": facts}
    attached = _ATTACHED_IPHONE.match(first_clean) or _ATTACHED_ANDROID.match(first_clean)
    if attached:
        name = attached.group("file").strip()
        if not plain_name(name):
            raise _Outside(name)
        facts = {"filename": name}
        mimetype = _mimetype(name)
        if mimetype:
            facts["mimetype"] = mimetype
        size = media(name)
        if size is None:
            facts["missing"] = True
        else:
            facts["size"] = size
        return {"type": _media_type(name), "caption": caption, "media": facts}
    located = _location(" ".join(text.translate(_STRIP_MARKS).split()))
    if located is not None:
        return located
    body = text.translate(_STRIP_MARKS).strip("\n")
    return {"type": "text", "body": body} if body.strip() else None


def parse_chat(text: str, *, label: str, key: str, title: str | None,
               options: ExportOptions, media: MediaLookup = lambda _name: None
               ) -> ExportedChat:
    """One exported chat from its text. `label` names the file in problems; `title` is the
    contact named by the file name, if any."""
    problems: list[str] = []
    entries = _split_lines(text, label, problems)
    if not entries:
        problems.insert(0, f"{label}: not a WhatsApp chat export (no message line in it)")
        return ExportedChat(key=key, file=label, problems=problems[:20])
    order = date_order(entries, options.date_order)
    tz = options.zone()
    parsed: list[_Parsed] = []
    notices = 0
    for entry in entries:
        day = _date(_parts(entry), order)
        clock = _clock(entry)
        if day is None or clock is None:
            problems.append(f"{label}:{entry.line}: the date or time "
                            f"{entry.date} {entry.time}{' ' + entry.ampm if entry.ampm else ''}"
                            f" is not valid ({order} dates); message skipped")
            continue
        sent_at = datetime(day.year, day.month, day.day, *clock, tzinfo=tz)
        whole = "\n".join(entry.lines)
        split = _AUTHOR.match(whole)
        author = split.group("author").translate(_STRIP_MARKS).strip() if split else ""
        if not split or not author or ". " in author:
            notices += 1  # no author: a notice (encryption, calls, security code)
            continue
        parsed.append(_Parsed(line=entry.line, sent_at=sent_at, author=author,
                              text=split.group("text")))
    authors: list[str] = []
    for item in parsed:
        if not any(_same(item.author, known) for known in authors):
            authors.append(item.author)
    if len(authors) > 2:
        return ExportedChat(key=key, file=label, name=title, is_group=True, authors=authors,
                            notices=notices, problems=problems)
    contact, problem = _contact(authors, title, options)
    if problem:
        problems.append(f"{label}: {problem}")
        return ExportedChat(key=key, file=label, name=title, authors=authors, notices=notices,
                            problems=problems)
    messages: list[ImportedMessage] = []
    for item in parsed:
        try:
            fields = _content(item.text, media)
        except _Outside as outside:
            return _refused(key, label, f"line {item.line} names the attachment "
                            f"{str(outside)!r}, which is outside the export's folder")
        if fields is None:
            notices += 1
            continue
        incoming = contact is not None and _same(item.author, contact)
        messages.append(ExportedMessage(
            direction="IN" if incoming else "OUT", sender="CLIENT" if incoming else "HUMAN",
            sent_at=item.sent_at, author=item.author, line=item.line, **fields))  # type: ignore[arg-type]
    name = next((n for n in (contact, title) if n and not looks_like_number(n)), None)
    phone = _phone(contact, title, options, problems, label)
    return ExportedChat(key=key, file=label, name=name, phone=phone, messages=messages,
                        authors=authors, notices=notices, problems=problems)


def _contact(authors: list[str], title: str | None, options: ExportOptions
             ) -> tuple[str | None, str | None]:
    """(the contact's author name, a problem). The owner is, in order: `--me`; the linked
    account (its push name or number); whoever is not the contact named by the file or zip
    name; whoever is not shown by number (an owner never is, in their own export)."""
    if options.me:
        others = [a for a in authors if not _same(a, options.me)]
        if len(others) <= 1 and (others or title):
            return (others[0] if others else title), None
        return None, (f"--me {options.me!r} matches neither author "
                      f"({', '.join(repr(a) for a in authors)})")
    account = [a for a in (options.account_name, options.account_phone) if a]
    owners = [a for a in authors if any(_same(a, known) for known in account)]
    if len(owners) == 1 and len(authors) <= 2:
        others = [a for a in authors if a != owners[0]]
        if others or title:
            return (others[0] if others else title), None
    if title is not None:
        if any(_same(a, title) for a in authors):
            return next(a for a in authors if _same(a, title)), None
        if len(authors) == 1:
            return title, None  # only the owner wrote
    if len(authors) == 2:
        numbers = [a for a in authors if looks_like_number(a)]
        if len(numbers) == 1:
            return numbers[0], None
    if not authors:
        return title, None
    return None, ("cannot tell the account owner's messages from the contact's: neither the "
                  "linked account nor the file name names one of the authors "
                  f"({', '.join(repr(a) for a in authors)}); give the owner's name with --me")


def _phone(contact: str | None, title: str | None, options: ExportOptions,
           problems: list[str], label: str) -> str | None:
    for candidate in (contact, title):
        if candidate and looks_like_number(candidate):
            digits = _digits(candidate)
            return "+" + digits
    for candidate in (contact, title):
        if candidate and _key(candidate) in options.phones:
            return options.phones[_key(candidate)]
    who = contact or title or "the contact"
    problems.append(f"{label}: {who} is shown by name, not by number; give the number with "
                    f"--phone '{who}=+996...'")
    return None


# Files, folders and zips ------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") \
            else data.decode("cp1252", errors="replace")


def _refused(key: str, label: str, why: str) -> ExportedChat:
    return ExportedChat(key=key, file=label,
                        problems=[f"{label}: refused, nothing of it imported: {why}"])


def read_text_file(path: Path, options: ExportOptions,
                   limits: ImportSettings | None = None) -> ExportedChat:
    """A `.txt` export; media it names are looked for beside it (plain names only)."""
    limits = limits or ImportSettings()
    label = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return ExportedChat(key=str(path.absolute()), file=label,
                            problems=[f"{label}: cannot read: {exc.strerror}"])
    if len(data) > limits.max_file_bytes:
        return _refused(str(path.absolute()), label, f"larger than {limits.max_file_bytes} "
                        "bytes (imports.max_file_bytes)")

    def beside(name: str) -> int | None:
        if not plain_name(name):
            return None
        candidate = path.parent / name
        return candidate.stat().st_size if candidate.is_file() else None

    return parse_chat(_decode(data), label=label, key=str(path.absolute()),
                      title=title_name(path.name), options=options, media=beside)


RATIO_FLOOR = 1 << 20
"""Entries smaller than this (uncompressed) are not held to `max_ratio`."""


def zip_problem(infos: Sequence[zipfile.ZipInfo], limits: ImportSettings) -> str | None:
    """Why a zip with these entries must be refused (None: it may be read), judged from its
    directory alone, before anything is decompressed."""
    if len(infos) > limits.max_entries:
        return f"{len(infos)} entries, more than {limits.max_entries} (imports.max_entries)"
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if (name.startswith(("/", "\\")) or ".." in parts or "\\" in name or "\0" in name
                or re.match(r"^[A-Za-z]:", name)):
            return f"the entry {name!r} is named outside the zip"
    total = sum(info.file_size for info in infos)
    if total > limits.max_archive_bytes:
        return (f"{total} bytes uncompressed, more than {limits.max_archive_bytes} "
                "(imports.max_archive_bytes)")
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR and ratio > limits.max_ratio:
            return (f"the entry {info.filename!r} is compressed {ratio:.0f} to 1, more than "
                    f"{limits.max_ratio:g} (imports.max_ratio): a zip bomb?")
        if info.filename.lower().endswith(".txt") and info.file_size > limits.max_file_bytes:
            return (f"the chat {info.filename!r} is {info.file_size} bytes uncompressed, more "
                    f"than {limits.max_file_bytes} (imports.max_file_bytes)")
    return None


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int) -> bytes | None:
    """The member's bytes, or None when it holds more than LIMIT (whatever its header said)."""
    with archive.open(member) as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def read_zip(path: Path, options: ExportOptions,
             limits: ImportSettings | None = None) -> list[ExportedChat]:
    """The chats of a `.zip` export (usually one `.txt`, with or without its media); refused
    whole when `zip_problem` finds a reason."""
    limits = limits or ImportSettings()
    label = str(path)
    key = str(path.absolute())
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return [ExportedChat(key=key, file=label,
                             problems=[f"{label}: not a readable zip file: {exc}"])]
    with archive:
        problem = zip_problem(archive.infolist(), limits)
        if problem is not None:
            return [_refused(key, label, problem)]
        members = [m for m in archive.infolist() if not m.is_dir()
                   and not m.filename.startswith("__MACOSX/")]
        sizes = {Path(m.filename).name: m.file_size for m in members}
        texts = [m for m in members if m.filename.lower().endswith(".txt")]
        if not texts:
            return [ExportedChat(key=key, file=label,
                                 problems=[f"{label}: no chat (.txt) in the zip file"])]
        chats = []
        for member in texts:
            inner = f"{label}!{member.filename}"
            try:
                data = _read_member(archive, member, limits.max_file_bytes)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                return [_refused(key, label, f"{member.filename!r} cannot be read: {exc}")]
            if data is None:
                return [_refused(key, label, f"the chat {member.filename!r} holds more than "
                                 f"{limits.max_file_bytes} bytes (imports.max_file_bytes)")]
            title = title_name(member.filename) or title_name(path.name)
            chats.append(parse_chat(_decode(data), label=inner,
                                    key=f"{key}!{member.filename}", title=title,
                                    options=options, media=sizes.get))
        return chats


def read_location(location: str, options: ExportOptions,
                  limits: ImportSettings | None = None) -> list[ExportedChat]:
    """Every chat at `location`: a `.txt`, a `.zip`, or a folder (searched for both), within
    LIMITS (default: `ImportSettings()`)."""
    path = Path(location).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in (".txt", ".zip"))
        if not files:
            return [ExportedChat(key=str(path.absolute()), file=str(path),
                                 problems=[f"{path}: no .txt or .zip export in this folder"])]
        return [chat for file in files for chat in read_location(str(file), options, limits)]
    if not path.exists():
        return [ExportedChat(key=str(path.absolute()), file=str(path),
                             problems=[f"{path}: no such file or folder"])]
    if path.suffix.lower() == ".zip":
        return read_zip(path, options, limits)
    return [read_text_file(path, options, limits)]
