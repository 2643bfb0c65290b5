"""Slot words: the lexicons of ``lake.slots`` and ``lake.slot_roles`` (months, number words,
action verbs and their past forms, comparatives, the common words that are never names, and
the negation rule's cues, fillers and scope breakers). Data only; the rules that use them are
documented in ``lake.slots``."""

from __future__ import annotations

MONTHS = {m: i for i, ms in enumerate((
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
    ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
    ("oct", "october"), ("nov", "november"), ("dec", "december")), start=1) for m in ms}
DAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday today tonight "
                 "tomorrow yesterday".split())
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split()) if w != "_"}
NUMBER_WORDS.update(thirty="30", forty="40", fifty="50", sixty="60", seventy="70",
                    eighty="80", ninety="90", hundred="100", thousand="1000",
                    million="1000000", billion="1000000000", dozen="12")
DISCOURSE = frozenset("things requests problems issues questions".split())
UNIT_WORDS = ("percent dollars dollar usd eur euros euro cents cent pounds gbp kg g lb lbs oz "
              "km m mi miles mile ml l gb mb tb kb hours hour hrs hr minutes minute mins min "
              "seconds sec days day weeks week months month years year pieces piece items item "
              "bar inch inches ft feet cm mm thousand million billion trillion k bn").split()

# canonical action: "request forms | past forms" (past forms are recognized, not counted)
ACTIONS: dict[str, str] = {}
PAST: set[str] = set()
for _canon, _forms in {
    "cancel": "cancel cancels canceling cancelling cancellation | canceled cancelled",
    "return": "return returns returning | returned",
    "exchange": "exchange exchanges exchanging swap swaps swapping | exchanged swapped",
    "refund": "refund refunds refunding | refunded",
    "modify": "modify modifies modifying update updates updating edit edits editing alter "
              "alters altering | modified updated edited altered",
    "change": "change changes changing | changed",
    "keep": "keep keeps keeping | kept",
    "book": "book books booking reserve reserves reserving | booked reserved",
    "reschedule": "reschedule reschedules rescheduling postpone postpones | rescheduled "
                  "postponed",
    "transfer": "transfer transfers transferring | transferred",
    "escalate": "escalate escalates escalating human humans representative representatives "
                "supervisor | escalated",
    "pay": "pay pays paying | paid",
    "delete": "delete deletes deleting remove removes removing | deleted removed",
    "add": "add adds adding | added",
    "create": "create creates creating | created",
    "buy": "buy buys buying purchase purchases purchasing reorder reorders reordering | "
           "bought purchased reordered",
    "upgrade": "upgrade upgrades upgrading | upgraded",
    "downgrade": "downgrade downgrades downgrading | downgraded",
    "renew": "renew renews renewing | renewed",
    "subscribe": "subscribe subscribes subscribing | subscribed",
    "unsubscribe": "unsubscribe unsubscribes unsubscribing | unsubscribed",
    "enable": "enable enables enabling activate activates activating | enabled activated",
    "disable": "disable disables disabling deactivate deactivates deactivating | disabled "
               "deactivated",
    "reset": "reset resets resetting |",
    "send": "send sends sending | sent",
    "split": "split splits splitting |",
}.items():
    _now, _past = _forms.split("|")
    ACTIONS.update(dict.fromkeys(_now.split() + _past.split(), _canon))
    PAST.update(_past.split())
GENERIC = {"change": frozenset(("exchange", "modify")),
            "exchange": frozenset(("change",)), "modify": frozenset(("change",))}

COMPARATIVES = frozenset("""
more less fewer most least fewest higher highest lower lowest bigger biggest larger largest
smaller smallest cheaper cheapest pricier priciest brighter brightest dimmer darker darkest
lighter lightest heavier heaviest faster fastest slower slowest longer longest shorter shortest
newer newest older oldest earlier earliest later latest better best worse worst greater
greatest thicker thinner wider widest narrower louder loudest quieter quietest stronger
strongest weaker weakest warmer cooler softer softest harder hardest easier easiest simpler
closer closest nearer nearest farther farthest further furthest taller tallest deeper
""".split())

# never proper nouns, even capitalized (sentence start, emphasis, titles)
COMMON_WORDS = frozenset("""
a an the this that these those there here it its it's i i'm i've i'd i'll me my mine we us our
you your yours you're you've you'll you'd he him his she her hers they them their theirs
who whom whose what which when where why how whoever whatever whenever wherever however
and or but nor so yet for if then else than as because since while though although unless
until till after before once whether either neither both each every all any some none no not
never always often sometimes also too very really just only even still already again ever
cannot
of in on at to from by with without into onto about above below over under between through
during against among within upon via per like
be am is are was were been being do does did doing done have has had having
can could may might must shall should will would
yes ok okay please thanks thank hello hi hey dear sir madam mr mrs ms dr
first second third next last lastly finally then later now
also besides moreover furthermore otherwise meanwhile instead anyway overall actually
note ps btw fyi eg ie etc re fw fwd
make sure ask tell say let get go come give take use try want need know see look find check
call help show think feel mention provide confirm explain agree prefer
customer user agent assistant system
one two three four five six seven eight nine ten
other another others same similar different opposite such own else
important urgent
""".split()) | frozenset(ACTIONS) | COMPARATIVES | DAYS | frozenset(MONTHS)

NEG_CUES = frozenset("not no never without cannot nor".split())
NEG_FILLER = frozenset("""
a an the to be been being any anything anyone anybody really even ever also just yet exactly
quite at all sure able want wants wanted need needs needed wish like likes try tries going
gonna wanna have has had do does did will would should could can may might must
longer more much very so too
it its this that these those them me you your my our their his her him us i we they he she
one ones
""".split())
NO_CONFLICT = frozenset("""
know knew known remember recall recollect think believe understand realize recognize sure
care mind like love hate mention reveal say tell share disclose speak talk remind
""".split())
SCOPE_BREAK = frozenset("and or but because so if then while unless although though when"
                        .split())
SCOPE_WORDS = 4
