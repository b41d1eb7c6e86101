"""Generic copying facts: an arbitrary key bound to a value of arbitrary shape, asked back.

Why (2026-12-03): models/gistmem-16k, trained on recall.py's sessions alone, recalled 10/10
on dialogues of training's own generator but 0/49 (full attention) and 1/49 (gist r4) on
bench/recall_heldout.py, whose fact kinds, value shapes and phrasings training never made.
It answered in training's style with values of training's kinds ("It is chess."): recall.py
has ~30 fact kinds with closed value sets (12 sports, 17 colours, ...) and a few dozen fixed
sentences, so much of each answer could be predicted from the key without copying it.

Here nothing but copying predicts an answer:
- keys are composed (owner x object x attribute, invented proper names from syllables,
  numbered units), so a key is almost never seen twice and no key -> value link can be kept;
- values come in many shapes (codes of any length and grouping, 1-12 digit numbers, decimals
  with units, money, dates and times in many formats, corpus words, invented words, names,
  short phrases, identifiers, symbol soup), independent of the key most of the time;
- statements, questions and answers are assembled from parts (prefix, frame, suffix), the key
  in one of two word orders, the value sometimes quoted, answers echo it in varied frames or
  bare;
- siblings share all but one part of their key and carry another value of the same shape, so
  the model must bind the right key; updates replace a value (the answer is the new one);
  facts also sit in tables, tool output (JSON, key=value), inside corpus passages, and in
  the assistant's own earlier replies.

The phrasings were written for this file without looking at bench/recall_heldout.py's
(check_disjoint and training/test_copying.py keep them apart). Used by recall.Session
(`generic_share`); pure standard library.
"""
import random
import re
import string

# ---------------------------------------------------------------- vocabulary
ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m",
          "n", "p", "pr", "qu", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "z", ""]
NUCLEI = ["a", "e", "i", "o", "u", "ae", "ai", "ea", "ie", "oo", "ou", "y"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "ck", "st", "ng", "v"]

RELATIVES = ["cousin", "neighbour", "dentist", "boss", "coach", "uncle", "aunt", "grandmother",
             "grandfather", "roommate", "tutor", "accountant", "plumber", "editor", "barber",
             "pharmacist", "nephew", "niece", "godson", "stepbrother", "colleague", "intern",
             "manager", "trainer", "lawyer", "florist", "tailor", "piano teacher", "driver",
             "babysitter", "supervisor", "classmate", "partner", "agent", "architect"]
GROUPS = ["project", "lab", "committee", "studio", "festival", "warehouse", "clinic",
          "campaign", "expedition", "workshop", "orchestra", "league", "cooperative", "archive",
          "brewery", "foundation", "startup", "squad", "guild", "crew", "choir", "depot",
          "gallery", "hangar", "observatory", "quarry", "vineyard", "bakery", "theatre",
          "library", "mission", "initiative", "programme", "survey", "pilot study", "tour"]
OBJECTS = ["boat", "greenhouse", "laptop", "printer", "telescope", "drone", "kiln", "piano",
           "van", "trailer", "shed", "server rack", "aquarium", "loom", "camera", "microscope",
           "freezer", "beehive", "tractor", "canoe", "generator", "vault", "mailbox",
           "storage unit", "garden plot", "workstation", "sailboat", "caravan", "forklift",
           "projector", "amplifier", "oven", "backup drive", "tablet", "thermostat", "crane",
           "robot arm", "incubator", "sensor", "router", "safe", "locker room", "attic",
           "basement", "studio flat", "barn", "kayak", "scooter", "glider", "radio"]
ADJECTIVES = ["old", "new", "spare", "second", "blue", "small", "main", "north", "east",
              "upstairs", "red", "backup", "shared", "temporary", "third", "silver", "big",
              "west", "downstairs", "green", "rented", "borrowed", "oldest", "test"]
ATTRIBUTES = ["serial", "access phrase", "backup phrase", "budget code", "cost centre",
              "reference", "nickname", "motto", "call sign", "label", "version tag",
              "batch code", "asset tag", "frequency", "pin code", "model", "colour scheme",
              "lucky number", "safe word", "password hint", "favourite word", "owner",
              "contact person", "launch date", "due date", "opening time", "closing time",
              "deadline", "capacity", "price", "fee", "deposit", "temperature setting",
              "voltage", "firmware", "license key", "host name", "login", "shelf",
              "aisle", "bay", "slot", "row and column", "grid square", "radio channel",
              "secret", "watchword", "codename", "tagline", "theme", "mascot", "password",
              "signal", "sequence", "checksum", "cipher", "keyword", "slogan", "code word",
              "registration", "permit", "licence number", "voucher", "coupon", "promo code",
              "project code", "room code", "desk number", "floor", "wing", "pier",
              "platform", "track", "dock", "hall", "bench", "table number", "start time",
              "finish time", "target", "limit", "quota", "score", "rating", "ranking",
              "balance", "total", "estimate", "measurement", "length", "height", "width",
              "speed", "setting", "mode", "recipe", "ingredient", "pattern", "tune",
              "song", "book", "film", "painting", "poem", "dish", "cocktail", "flower",
              "tree", "bird", "stone", "metal", "fabric", "font", "shade", "emblem",
              "flag", "anthem", "founder", "sponsor", "chair", "treasurer", "captain",
              "next stop", "destination", "origin", "hometown", "first word", "last word",
              "magic number", "secret ingredient", "hidden message", "answer", "clue"]
OWNER_WORDS = ["our"]          # beside "my", names, groups and numbered units
UNIT_NOUNS = ["unit", "bay", "cabinet", "module", "node", "terminal", "kit", "sample",
              "batch", "crate", "rack", "pod", "cell", "tank", "station"]
CURRENCIES = [("$", ""), ("€", ""), ("£", ""), ("", " CHF"), ("", " SEK"), ("¥", ""),
              ("", " NZD"), ("", " euros"), ("", " dollars"), ("₹", ""), ("", " BRL")]
UNITS = ["cm", "ml", "V", "Hz", "%", "psi", "km", "g", "°C", "rpm", "MB", "lux", "W", "mm",
         "GB", "dB", "kPa", "m", "l", "mAh", "ft", "in", "mph", "km/h", "kWh", "ohm"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SURNAMES = ["Moreau", "Ortega", "Lund", "Farah", "Kimura", "Nowak", "Tran", "Keane", "Brandt",
            "Vasquez", "Orlov", "Dlamini", "Weber", "Laurent", "Ricci", "Demir", "Gill",
            "Pereira", "Holm", "Dvorak", "Mensah", "Doyle", "Suzuki", "Sokolova", "Berg",
            "Navarro", "Nwosu", "Farkas", "Byrne", "Cho", "Ito", "Kerr", "Vogel", "Reyes"]
TLDS = ["org", "net", "io", "dev", "lan", "example", "test", "local", "co"]

# ---------------------------------------------------------------- phrasing parts (user)
STATE_PRE = ["", "", "", "Okay, ", "Also, ", "One more thing: ", "Quick note: ", "FYI, ",
             "Hey, ", "So, ", "Right, ", "Heads up: ", "Important: ", "Alright, ",
             "Before we move on, ", "While I think of it, ", "Please note: ", "And ",
             "Another detail: ", "Next, ", "Oh, and ", "Also worth knowing: ", "PS: ",
             "Small thing: ", "To be clear, ", "Good to know: ", "New info: "]
STATE_CORE = ["{K} is {V}", "{K} is set to {V}", "{K}: {V}", "{K} = {V}", "{K} -> {V}",
              "{V} is {K}", "we settled on {V} for {K}", "I picked {V} as {K}",
              "use {V} for {K}", "{K} reads {V}", "{K} will be {V}", "the value for {K} is {V}",
              "set {K} to {V}", "{K} should be {V}", "{K} has been assigned {V}",
              "{K} comes out to {V}", "store {V} under {K}", "{K} is registered as {V}",
              "{K} is written as {V}", "{K} equals {V}", "they gave {K} as {V}",
              "write down {V} as {K}", "{K} is now {V}", "{K} goes by {V}",
              "I'd like you to keep {K}, which is {V}", "{K}, if you need it, is {V}",
              "keep in mind {K} is {V}", "{K} happens to be {V}", "{K} was listed as {V}",
              "the entry for {K} says {V}", "{V}, that is {K}", "{K} (it is {V})",
              "for {K} we use {V}", "I got {V} for {K}"]
STATE_END = [".", ".", ".", "!", ". Keep that.", ". Please hold on to it.", ", remember that.",
             ". Don't mix it up.", ". I'll need it later.", ". That's important.", ". Thanks.",
             ". Got it?", "", ". Make a note.", " - please keep it.", ". Save it somewhere.",
             ". It matters later.", "; that's all for now."]
ASK_PRE = ["", "", "", "Okay, ", "Hey, ", "Now, ", "Quick question: ", "Sorry, ",
           "One thing: ", "Hmm, ", "Back to the details: ", "So, ", "Right, ", "Next: ",
           "Question: ", "Let me check: ", "Earlier I gave you something. ", "Help me out: ",
           "Going back a bit, ", "I need a detail: ", "Another one: ", "Last thing: "]
ASK_CORE = ["what is {K}?", "what's {K}?", "what did we set {K} to?", "which value has {K}?",
            "tell me {K}.", "give me {K}.", "I need {K}.", "{K}?", "do you have {K}?",
            "can you find {K}?", "what value did I give for {K}?", "look up {K}.",
            "what was stored under {K}?", "what's the current value of {K}?",
            "repeat {K} for me.", "say {K} back to me.", "what do we have for {K}?",
            "could you tell me {K}?", "which one is {K}?", "what's written for {K}?",
            "how did I put {K}?", "what does {K} say?", "can you recall {K}?",
            "what value goes with {K}?", "spell out {K}.", "{K} - what is it?",
            "do you know {K}?", "pull up {K}.", "what's the entry for {K}?",
            "find me {K}, exactly.", "quote {K} back to me."]
IMPERATIVE = {"tell", "give", "look", "repeat", "say", "spell", "pull", "find", "quote"}
ASK_END = ["", "", "", " Thanks.", " Please.", " Exactly, please.", " Just the value.",
           " I need it now.", " Thank you!", " No rush.", " Word for word.", " Cheers."]
# ---------------------------------------------------------------- phrasing parts (assistant)
ANSWER_CORE = ["{V}", "{V}.", "{K} is {V}.", "It's {V}.", "That's {V}.", "{V} - that's {K}.",
               "You said {V}.", "You set it to {V}.", "{K}: {V}", "The value is {V}.",
               "{V}, as you told me.", "I have {V} for {K}.", "Stored as {V}.",
               "{K} was given as {V}.", "{K} is {V}, as you said.", "It was {V}.",
               "According to what you wrote, {V}.", "{K} = {V}", "Sure: {V}.",
               "That would be {V}.", "Here it is: {V}.", "{K} reads {V}.",
               "You gave {V} for {K}.", "{V} is {K}.", "The entry says {V}."]
ANSWER_PRE = ["Sure. ", "Yes - ", "Let me check... ", "From earlier: ", "Okay. ", "Right: ",
              "I have it. ", "Found it. ", "Of course. ", "Checking my notes: "]
ACK = ["Noted.", "Okay.", "Got it.", "Saved.", "I'll keep that.", "Thanks, recorded.",
       "Understood.", "Kept.", "Logged it.", "Okay, I have those.", "All noted.", "Sure.",
       "I've written that down.", "Will do.", "Recorded.", "Fine, noted.", "Done."]
UPDATE_PRE = ["Actually, ", "Correction: ", "Scratch that, ", "Change of plan: ",
              "Update: ", "Wait, I was wrong: ", "Small fix: ", "It changed: ",
              "Never mind the earlier one, ", "Revised: "]
UPDATE_CORE = ["{K} is {V}", "{K} is now {V}", "{K} changed to {V}",
               "{K} has been updated to {V}", "use {V} for {K} instead",
               "{K} is {V}, not {O}", "not {O} - {K} is {V}", "{K} went from {O} to {V}"]
TABLE_INTRO = ["Here are the details:", "Tool output:", "Results:", "From the file:",
               "Records:", "The export says:", "Pasting the sheet:", "Inventory:",
               "Settings dump:", "From the admin panel:", "Lookup result:", "Config:",
               "Query returned:", "The list:", "Notes from the meeting:", "Registry:"]
TABLE_ROW = ["{K} | {V}", "- {K}: {V}", "{K}\t{V}", "* {K} = {V}", "{K} ... {V}", "{K}, {V}",
             "{K} => {V}", "[{K}] {V}"]
DOC_INTRO = ["Read this memo:", "A page from the report:", "Here's the document:",
             "Excerpt from the manual:", "This came in the newsletter:", "From the minutes:",
             "Summary of the file:", "I copied this from the wiki:"]
DOC_FACT = ["{K} is {V}.", "Note that {K} is {V}.", "({K}: {V}.)", "For reference, {K} = {V}.",
            "In this case {K} was {V}.", "The record shows {K} as {V}."]
DOC_ACK = ["Read it.", "Okay, I went through it.", "Got the document.", "Thanks, read."]
ASSIST_ASK = ["Pick {K} for me.", "Choose {K}, anything.", "Make up {K}.",
              "Invent {K} and tell me.", "Can you generate {K}?", "Suggest {K}."]
ASSIST_SAY = ["{K} is {V}.", "Let's use {V} for {K}.", "How about {V} as {K}?",
              "I picked {V} for {K}.", "{K}: {V}."]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


# ---------------------------------------------------------------- keys
class Key:
    """owner x object x attribute. text(speaker, form): the noun phrase as user ('user') or
    assistant says it ('my' <-> 'your'); form 0 possessive, 1 'the <attr> of <owner thing>'."""

    def __init__(self, owner, obj, attr):
        self.owner, self.obj, self.attr = owner, obj, attr   # owner: (kind, text)

    def ident(self):
        return (self.owner, self.obj, self.attr)

    def forms(self):
        return [self.text(sp, f) for sp in ("user", "assistant") for f in (0, 1)]

    def _owner(self, speaker):
        kind, text = self.owner
        if kind in ("me", "our"):
            return text if speaker == "user" else "your"
        if kind == "rel" and speaker != "user":
            return "your" + text[2:]
        return text

    def text(self, speaker="user", form=0):
        kind, _ = self.owner
        o = self._owner(speaker)
        thing = None
        if self.obj:
            thing = f"{o} {self.obj}"
        if form == 1 and (thing or kind not in ("me", "our")):
            whose = thing or (o[:-2] if o.endswith("'s") else o)
            return f"the {self.attr} of {whose}"
        if thing:
            return f"{thing}'s {self.attr}"
        return f"{o} {self.attr}"


class Maker:
    """Keys, values and sentences; `rng` decides everything, `words` is a list of corpus words
    for word-shaped values, `names` first names (training/data/lists.json)."""

    def __init__(self, rng: random.Random, words, names, states):
        self.r = rng
        self.words = words
        self.names = names
        self.states = states

    # ---- invented words
    def pseudo(self, syllables=None):
        r = self.r
        n = syllables or r.choice([2, 2, 3])
        return "".join(r.choice(ONSETS) + r.choice(NUCLEI) + r.choice(CODAS) for _ in range(n))

    def proper(self):
        return cap(self.pseudo())

    # ---- keys
    def owner(self):
        r = self.r
        p = r.random()
        if p < 0.22:
            return ("me", "my")
        if p < 0.27:
            return ("our", r.choice(OWNER_WORDS))
        if p < 0.45:
            return ("name", f"{r.choice(self.names)}'s")
        if p < 0.55:
            return ("rel", f"my {r.choice(RELATIVES)}'s")
        if p < 0.82:
            style = r.randrange(3)
            g = r.choice(GROUPS)
            if style == 0:
                return ("group", f"the {self.proper()} {g}'s")
            if style == 1:
                return ("group", f"the {r.choice(ADJECTIVES)} {g}'s")
            return ("group", f"{self.proper()} {cap(g)}'s")
        return ("unit", f"{r.choice(UNIT_NOUNS)} {self._unit_id()}'s")

    def _unit_id(self):
        r = self.r
        s = r.randrange(4)
        if s == 0:
            return str(r.randrange(1, 100))
        if s == 1:
            return f"{r.choice(string.ascii_uppercase)}{r.randrange(1, 30)}"
        if s == 2:
            return self.proper()
        return r.choice(string.ascii_uppercase)

    def key(self):
        r = self.r
        obj = None
        if r.random() < 0.45:
            obj = r.choice(OBJECTS)
            if r.random() < 0.35:
                obj = f"{r.choice(ADJECTIVES)} {obj}"
        attr = r.choice(ATTRIBUTES)
        if r.random() < 0.12:
            attr = f"{r.choice(ADJECTIVES)} {attr}"
        return Key(self.owner(), obj, attr)

    def sibling(self, k: Key):
        """The same key but for one part: the distractor that forces binding."""
        r = self.r
        which = r.randrange(3)
        if which == 0:
            return Key(self.owner(), k.obj, k.attr)
        if which == 1:
            return Key(k.owner, r.choice(OBJECTS), k.attr)
        return Key(k.owner, k.obj, r.choice(ATTRIBUTES))

    # ---- values: (text, shape name)
    SHAPES = ["alnum", "alnum", "digits", "digits", "decimal", "money", "date", "time", "word",
              "pseudo", "words", "person", "place", "ident", "symbols"]

    def value(self, shape=None):
        r = self.r
        shape = shape or r.choice(self.SHAPES)
        return getattr(self, "_v_" + shape)(), shape

    def _v_alnum(self):
        r = self.r
        alphabet = r.choice([string.ascii_uppercase + string.digits,
                             string.ascii_lowercase + string.digits,
                             string.ascii_letters + string.digits, string.ascii_uppercase,
                             "0123456789ABCDEF"])
        n = r.randint(3, 14)
        chars = "".join(r.choice(alphabet) for _ in range(n))
        if r.random() < 0.5 and n >= 4:
            sep = r.choice(["-", " ", ".", "/", "_", ":", "-", "-"])
            out, i = [], 0
            while i < n:
                g = r.randint(2, 5)
                out.append(chars[i:i + g])
                i += g
            chars = sep.join(out)
        return chars

    def _v_digits(self):
        r = self.r
        n = r.randint(1, 12)
        s = str(r.randrange(10 ** (n - 1), 10 ** n)) if n > 1 else str(r.randrange(10))
        if r.random() < 0.15:
            s = "0" * r.randint(1, 3) + s
        p = r.random()
        if p < 0.15 and len(s) > 4:
            sep = r.choice([" ", ",", "-", "."])
            head = len(s) % 3 or 3
            s = sep.join([s[:head]] + [s[i:i + 3] for i in range(head, len(s), 3)])
        elif p < 0.22:
            s = r.choice(["#", "No. ", "n", "x"]) + s
        return s

    def _v_decimal(self):
        r = self.r
        v = f"{r.choice(['', '', '-'])}{r.randrange(0, 10 ** r.randint(1, 4))}.{r.randrange(0, 10 ** r.randint(1, 3))}"
        if r.random() < 0.6:
            v += r.choice(["", " "]) + r.choice(UNITS)
        return v

    def _v_money(self):
        r = self.r
        pre, post = r.choice(CURRENCIES)
        amount = r.randrange(1, 10 ** r.randint(1, 7))
        body = f"{amount:,}" if r.random() < 0.5 else str(amount)
        if r.random() < 0.5:
            body += f".{r.randrange(100):02d}"
        return pre + body + post

    def _v_date(self):
        r = self.r
        y, m, d = r.randrange(1950, 2100), r.randint(1, 12), r.randint(1, 28)
        suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(d, "th")
        return r.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m}/{d}/{y % 100:02d}",
                         f"{d} {MONTHS[m - 1]} {y}", f"{MONTHS[m - 1]} {d}{suffix}",
                         f"{MONTHS[m - 1][:3]} {d}, {y}", f"the {d}{suffix} of {MONTHS[m - 1]}",
                         f"{r.choice(DAYS)} {d} {MONTHS[m - 1]}", f"{d}.{m}.{y}",
                         f"{MONTHS[m - 1]} {y}", f"{y}/{m:02d}"])

    def _v_time(self):
        r = self.r
        h, mi = r.randrange(24), r.randrange(60)
        h12 = h % 12 or 12
        return r.choice([f"{h:02d}:{mi:02d}", f"{h12}:{mi:02d} {'pm' if h >= 12 else 'am'}",
                         f"{h:02d}{mi:02d}h", f"{h12}.{mi:02d} {'p.m.' if h >= 12 else 'a.m.'}",
                         f"{h:02d}:{mi:02d}:{r.randrange(60):02d}",
                         f"{r.choice(DAYS)} {h:02d}:{mi:02d}", f"quarter past {h12}",
                         f"{h12} o'clock"])

    def _v_word(self):
        r = self.r
        w = r.choice(self.words)
        return r.choice([w, w, cap(w), w.upper()])

    def _v_pseudo(self):
        r = self.r
        w = self.pseudo(r.randint(1, 4))
        return r.choice([w, cap(w), w.upper(), f"{cap(w)}{r.randrange(1, 100)}"])

    def _v_words(self):
        r = self.r
        return " ".join(r.choice(self.words) for _ in range(r.randint(2, 4)))

    def _v_person(self):
        r = self.r
        first, last = r.choice(self.names), r.choice(SURNAMES + [self.proper()])
        return r.choice([f"{first} {last}", f"{first} {r.choice(string.ascii_uppercase)}. {last}",
                         f"Dr. {last}", f"{first} {last}-{self.proper()}", first])

    def _v_place(self):
        r = self.r
        return r.choice([r.choice(self.states), f"Port {self.proper()}", f"{self.proper()} Falls",
                         f"{self.proper()}ville", f"New {self.proper()}", self.proper(),
                         f"{self.proper()}, {r.choice(self.states)}"])

    def _v_ident(self):
        r = self.r
        a, b = self.pseudo(), self.pseudo()
        return r.choice([f"{a}.{b}@{self.pseudo()}.{r.choice(TLDS)}",
                         f"/{a}/{b}/{self.pseudo()}{r.randrange(10)}",
                         f"{a}-{r.randrange(1, 99)}.{r.choice(TLDS)}",
                         f"{a}.{r.choice(TLDS)}/{self._v_alnum().replace(' ', '')}",
                         f"v{r.randrange(10)}.{r.randrange(30)}.{r.randrange(100)}",
                         f"0x{r.randrange(16 ** r.randint(2, 8)):x}",
                         f"#{r.randrange(16 ** 6):06x}", f"{a}_{b}", f"@{a}{r.randrange(100)}"])

    def _v_symbols(self):
        r = self.r
        pool = string.ascii_letters + string.digits + "!#%&*+=?~^"
        return "".join(r.choice(pool) for _ in range(r.randint(4, 10)))

    # ---- sentences; each returns (text, offset of the value in text)
    def _fill(self, template, k, v, old=None):
        """template with {K} {V} ({O}); -> text, offset of {V}. Values sometimes quoted."""
        r = self.r
        q = r.choice(["", "", "", "", "", '"', "'", "`"]) if "{V}" in template else ""
        vq = f"{q}{v}{q}"
        head, tail = template.split("{V}")
        head = head.replace("{K}", k).replace("{O}", old or "")
        tail = tail.replace("{K}", k).replace("{O}", old or "")
        return head + vq + tail, len(head) + len(q)

    def statement(self, key, v):
        r = self.r
        k = key.text("user", r.randrange(2))
        text, off = self._fill(r.choice(STATE_CORE), k, v)
        pre = r.choice(STATE_PRE)
        if (not pre or pre.endswith(": ")) and off > 0:
            text = cap(text)   # never the value's own first letter
        body = pre + text
        end = r.choice(STATE_END)
        return body + end, off + len(pre)

    def update(self, key, v, old):
        r = self.r
        k = key.text("user", r.randrange(2))
        text, off = self._fill(r.choice(UPDATE_CORE), k, v, old)
        pre = r.choice(UPDATE_PRE)
        return pre + text + ".", off + len(pre)

    def question(self, key):
        r = self.r
        k = key.text("user", r.randrange(2))
        core = r.choice(ASK_CORE).replace("{K}", k)
        pre = r.choice(ASK_PRE)
        if r.random() < 0.2 and core.split()[0] in IMPERATIVE:
            core = "please " + core
        if not pre or pre.endswith((": ", ". ")):
            core = cap(core)
        return pre + core + r.choice(ASK_END)

    def answer(self, key, v):
        r = self.r
        k = key.text("assistant", r.randrange(2))
        text, off = self._fill(r.choice(ANSWER_CORE), k, v)
        if off > 0:
            text = cap(text)
        if r.random() < 0.3:
            pre = r.choice(ANSWER_PRE)
            text, off = pre + text, off + len(pre)
        return text, off

    def row(self, key, v, fmt):
        k = key.text("user", self.r.randrange(2))
        text, off = self._fill(fmt, cap(k) if self.r.random() < 0.5 else k, v)
        return text, off


WORD_RE = re.compile(r"\b[a-z]{4,12}\b")
_WORDS = {}


def corpus_words(docs, limit=40, chars=30000, common=400):
    """Lowercase words of a few documents, less the `common` most frequent ones (cached per
    docs list): word values the model cannot guess from the sentence around them."""
    if id(docs) not in _WORDS:
        counts = {}
        for d in docs[:limit]:
            text = d if isinstance(d, str) else d["text"]
            for w in WORD_RE.findall(text[:chars]):
                counts[w] = counts.get(w, 0) + 1
        top = set(sorted(counts, key=lambda w: (-counts[w], w))[:common])
        words = sorted(w for w in counts if w not in top)
        _WORDS[id(docs)] = words if len(words) >= 50 else sorted(counts) or ["alpha", "beta"]
    return _WORDS[id(docs)]


# ---------------------------------------------------------------- groups of statements
STYLES = ["turn", "turn", "turn", "table", "json", "doc", "assist"]


def state_group(maker: Maker, facts, style, passage=None):
    """Messages [(role, content, marks)] that state `facts` [(fid, key, value)]; marks are
    ("state", fid, value, row, offset of the value in row). `passage(chars)` gives corpus text
    for the 'doc' style."""
    r = maker.r
    if style == "assist" and len(facts) == 1:
        fid, key, v = facts[0]
        ask = cap(r.choice(ASSIST_ASK).replace("{K}", key.text("user", r.randrange(2))))
        say, off = maker._fill(r.choice(ASSIST_SAY), key.text("assistant", r.randrange(2)), v)
        if off > 0:
            say = cap(say)
        return [("user", ask, None), ("assistant", say, [("state", fid, v, say, off)])]
    if style == "doc" and passage is not None and len(facts) <= 3:
        text = passage(r.randint(400, 1400))
        cuts = [m.end() for m in re.finditer(r"[.!?] ", text)] or [len(text)]
        places = sorted(r.sample(cuts, min(len(cuts), len(facts))))
        while len(places) < len(facts):
            places.append(places[-1])
        rows, out, last = [], [], 0
        for (fid, key, v), at in zip(facts, places):
            k = key.text("user", r.randrange(2))
            row, off = maker._fill(r.choice(DOC_FACT), k, v)
            if off > 0:
                row = cap(row)
            out += [text[last:at], row + " "]
            last = at
            rows.append(("state", fid, v, row, off))
        out.append(text[last:])
        body = "".join(out).strip()
        return [("user", f"{r.choice(DOC_INTRO)}\n\n{body}", rows),
                ("assistant", r.choice(DOC_ACK), None)]
    if style == "json":
        rows, parts = [], []
        kv = r.random() < 0.4
        for fid, key, v in facts:
            k = key.text("user", r.randrange(2))
            if kv:
                k = k.replace(" ", r.choice(["_", ".", "-"])).replace("'", "")
                row, off = f"{k}={v}", len(k) + 1
            else:
                row, off = f'"{k}": "{v}"', len(k) + 5
            rows.append(("state", fid, v, row, off))
            parts.append(row)
        if kv:
            body = "\n".join(parts)
        else:
            sep = r.choice([", ", ",\n  "])
            body = "{" + ("\n  " if "\n" in sep else "") + sep.join(parts) + (
                "\n}" if "\n" in sep else "}")
        return [("user", f"{r.choice(TABLE_INTRO)}\n{body}", rows),
                ("assistant", r.choice(ACK), None)]
    if style in ("table", "json", "doc"):
        fmt = r.choice(TABLE_ROW)
        rows, lines = [], []
        for fid, key, v in facts:
            row, off = maker.row(key, v, fmt)
            rows.append(("state", fid, v, row, off))
            lines.append(row)
        return [("user", f"{r.choice(TABLE_INTRO)}\n" + "\n".join(lines), rows),
                ("assistant", r.choice(ACK), None)]
    rows, texts = [], []
    for fid, key, v in facts:
        t, off = maker.statement(key, v)
        rows.append(("state", fid, v, t, off))
        texts.append(t)
    joiner = r.choice([" ", " ", "\n"])
    return [("user", joiner.join(texts), rows), ("assistant", r.choice(ACK), None)]
