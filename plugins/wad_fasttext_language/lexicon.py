"""Chat words of each language: greetings, thanks, yes and no, agreement, goodbyes, and the
little function words (pronouns, articles, prepositions) that give a short text away. A one- to three-word message ("merci beaucoup", "vale", "dzięki")
is too short for a statistical model; when its words belong to one language only, this decides.

Words are written as people type them. A lookup tries the word in lower case first, then
without accents (`fold`), so "dzieki" finds "dzięki" while "intéressant" (French) and
"interessant" (German) stay apart. A word of several languages ("super", "no") is listed
under each: then the message's other words, or the model, decide among them.
"""

from __future__ import annotations

import functools
import unicodedata

_WORDS: dict[str, str] = {
    "en": """
        howdy hiya g'day cheers ta thanks heaps apologies apology sorry pardon excuse oops whoops yikes gosh omg lmao brb btw idk tbh asap fyi bro dude buddy guys folks yay hooray nope nah yeah yea ya yup aye indeed certainly surely totally absolutely definitely maybe perhaps probably nevermind anyway anyways whatever gotcha roger copy okie dokie alrighty sweet neat handy grand lovely gorgeous stunning brilliant splendid super superb fab fabulous thanks thank appreciated appreciate welcome congrats congratulations bless goodnight gn night later laters cya ttyl bye byee farewell safe travels enjoy hope well soon tonight today yesterday tomorrow hmm really seriously honestly exactly precisely correct true false wrong sounds like great idea not yet still sure thing no way why who which whose would should might must shall
        i i'm we we're you it is are the an to of and in on at for with my our your this that there what how when where can could do does just get gets guys heard be will would not but has was were me us they if any some
        hi hello hey hiya heya yo thanks thank you thx ty cheers yes yeah yep yup no nope nah
        sure great cool perfect awesome brilliant lovely fine good morning evening afternoon
        night bye goodbye see later soon please pls plz sorry alright noted understood deal got
        it amazing nice welcome mate legend sounds exactly right indeed wow of course much so
        lot a many the best take care have day problem worries done here now fantastic
        excellent wonderful agreed absolutely definitely gotcha thankyou appreciate it's that
        will do sweet np then all good tomorrow great thanks
    """,
    "fr": """
        chouette génial géniale trop top nickel parfait parfaite impec impeccable excellent super sympa terrible ouf waouh wow bravo félicitations merci mercii remerciements bisou bisous bises biz coucou cc slt bjr bsr jsp mdr ptdr bref bah ben beh euh bon bien ok okay d'acc dac ouais ouaip nan non pas encore toujours jamais désolé désolés désolées navré pardon excusez excuse moi toi lui elle nous vous eux absolument carrément clairement évidemment forcément vraiment sérieux sérieusement exactement voilà voila entendu compris noté reçu bien reçu volontiers pourquoi comment quand combien où qui quoi quel quelle quels quelles demain aujourd'hui hier ce soir bientôt tantôt tard tôt ensuite alors donc aussi encore déjà peut-être sûrement bisous bonne continuation courage
        je j'ai on nous vous il elle est le la les un une des du à au aux pour avec dans sur et ou mais qui que quoi ne pas plus mon ma mes notre nos votre vos ce cette ça y en arrive attend très aussi déjà toujours ici là chez intéressant
        bonjour bonsoir salut coucou merci beaucoup bien oui ouais non d'accord dac parfait
        super génial top nickel impeccable entendu compris volontiers avec plaisir bonne journée
        soirée nuit au revoir à bientôt demain plus tard désolé désolée pardon s'il vous plaît
        stp svp voilà exactement sûr très tant pis pas de problème souci c'est noté bon ça
        marche encore bises bisous tout trop grand excellent magnifique évidemment carrément
        d'acc merciii je comprends oui oui si bien sûr à demain
    """,
    "de": """
        servus moin grüß gott grüezi hey hallöchen tschüss tschüssi ciao baba bis dann später gleich morgen heute gestern danke dankeschön vielen lieben herzlichen besten tausend dank bitte bitteschön gerne gern geschehen nö nee ne nein jo jup joa jep ja jawohl klar logo sicher natürlich selbstverständlich genau stimmt richtig korrekt eben eh halt mal doch schon noch nicht immer nie vielleicht wahrscheinlich bestimmt echt wirklich krass geil super toll prima klasse spitze hammer wahnsinn mega wunderbar herrlich perfekt prächtig schön schade mist oh je ach so achso aha okay oki passt gut alles entschuldigung entschuldige sorry verzeihung tut mir leid kein problem keine sorge warum wieso weshalb wer wo wann wie was welche welcher dir dich mir mich euch uns ihnen
        ich wir sie er es ist sind der die das den dem ein eine einen und oder aber nicht mit für auf im in zu von bei noch schon auch mein unser ihr wo was wie wann kann können habe haben hat interessant
        hallo moin servus hi guten tag morgen abend nacht danke dank vielen schön sehr bitte ja
        nein jawohl genau stimmt klar alles super prima toll klasse wunderbar perfekt gut gute
        okay tschüss tschau ciao bis bald später gleich entschuldigung sorry kein problem gern
        gerne geschehen natürlich passt verstehe verstanden schade nochmals auf wiedersehen
        lieben liebe grüße gruß herzlichen sicher logo einverstanden richtig danke schön
        dankeschön bitteschön mahlzeit doch
    """,
    "es": """
        hola holi buenas buenos saludos qué tal que tal chao chau adiós hasta luego pronto mañana hoy ayer gracias graciass mil muchas muchísimas gracias agradecido agradecida de nada vale venga dale guay chulo genial estupendo estupenda fenomenal perfecto perfecta bárbaro buenísimo increíble maravilloso precioso genial claro claro que sí por supuesto desde luego obvio exacto exactamente cierto verdad seguro quizás quizá tal vez nop nope no sí sip sii ajá vaya uf uff jaja jajaja jeje ostras hostia madre mía ay perdón perdona disculpa disculpe lo siento sentimos tranquilo tranquila sin problema ningún problema todavía aún ya luego después temprano tarde aviso avisamos avisaré por qué cómo cuándo dónde quién cuál cuánto cuánta confirmo confirmado
        yo nosotros usted el la los las una y o pero que de del en con para por es está estamos son hay ya mi nuestro su dónde cuándo cómo cuánto habrá también aquí tenemos podemos queremos
        hola buenas buenos días dia tardes noches gracias muchas muchísimas mil sí si no vale
        claro perfecto genial estupendo buenísimo bueno bien muy de acuerdo nada adiós chao chau
        hasta luego mañana pronto saludos besos abrazo un perdón disculpa lo siento por favor
        exacto supuesto qué pena entiendo entendido listo otra vez gusto con mucho igualmente
        dale venga vamos
    """,
    "pl": """
        cześć czesc hej hejka siema elo witam witaj dzień dobry dobry wieczór dobranoc do zobaczenia do jutra na razie pa papa narka dzięki dzieki dziękuję dziekuje dziękujemy stokrotne serdeczne wielkie bardzo proszę prosze nie ma za co spoko spox luz okej oki ok dobra dobrze jasne pewnie pewno oczywiście oczywiscie jasne że tak nie nie wiem może chyba raczej na pewno naprawdę serio dokładnie właśnie wlasnie no to super fajnie fajny fajna świetnie swietnie ekstra rewelacja rewelacyjnie cudownie wspaniale genialnie bomba sorki sorry przepraszam przepraszamy wybacz wybaczcie trudno szkoda kurczę kurcze o rany ojej jeszcze już juz potem później pozniej zaraz teraz dzisiaj dziś jutro wczoraj dlaczego czemu jak kiedy gdzie kto co który która ile dam znać potwierdzam zgoda
        ja my wy pan pani jest są to i w z do od dla czy ale już mój nasz gdzie kiedy jak ile co można mogę może ktoś jesteśmy
        cześć hej siema dzień dobry dobra dobrze wieczór dobranoc dziękuję dziękujemy dzięki
        wielkie bardzo tak nie jasne oczywiście dokładnie super świetnie ekstra extra spoko
        okej w porządku rozumiem pozdrawiam pozdrawiamy do widzenia zobaczenia jutra
        usłyszenia na razie przepraszam proszę sprawy ma szkoda trudno zgadza się no jeszcze
        raz miłego dnia czesc
    """,
    "ru": """
        привет здравствуйте здрасте добрый день вечер утро спасибо спс пасибо большое да нет
        ага угу хорошо ладно отлично супер класс понятно ясно конечно пока до свидания связи
        завтра извините простите пожалуйста окей договорились
    """,
    "ar": """
        مرحبا أهلا اهلا السلام عليكم شكرا جزيلا نعم لا تمام طيب حسنا ممتاز مع السلامة إن شاء الله
        الحمد لله مشكور يعطيك العافية تسلم
    """,
}

NEUTRAL: frozenset[str] = frozenset({
    "ok", "okay", "okey", "okk", "oki", "k", "kk", "hmm", "hm", "mmm", "haha", "hahaha", "lol",
    "xd", "wow", "ah", "oh", "aha", "uh", "ooh", "yay", "ок", "ахах", "хаха", "ммм",
})
"""Words that say nothing of the language they are written in."""


def fold_once(word: str) -> str:
    """Lower case without accents (and "ł" as "l"), the form the lexicon is looked up in."""
    decomposed = unicodedata.normalize("NFD", word.lower().replace("ł", "l").replace("’", "'"))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


fold = functools.lru_cache(maxsize=4096)(fold_once)
"""`fold_once`, remembering the words of the latest texts (chats repeat their words)."""


_EXACT: dict[str, frozenset[str]] = {}
_FOLDED: dict[str, frozenset[str]] = {}
for _language, _text in _WORDS.items():
    for _word in _text.split():
        for _table, _key in ((_EXACT, _word.lower()), (_FOLDED, fold(_word))):
            _table[_key] = _table.get(_key, frozenset()) | {_language}


def claims(word: str) -> frozenset[str]:
    """The languages `word` is a chat word of (empty when none)."""
    lower = word.lower().replace("’", "'")
    return _EXACT.get(lower) or _FOLDED.get(fold(lower), frozenset())
