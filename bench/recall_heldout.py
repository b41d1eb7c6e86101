"""Held-out recall conversations for bench/recall_eval.py --source heldout (issue 14).

Everything a model could have memorised as a pattern is new here: fact kinds, value shapes,
statement and question phrasings, acknowledgements and fillers are written apart from
training's generators (training/dialogues.py, training/recall.py), and `check_disjoint` tests
that no template of this file is one of theirs. Only the filler prose comes from the same
corpus, from its held-out documents (split "eval", never trained on).

A conversation of about `tokens` raw tokens: facts (6-12, fewer when short) stated in user
turns spread over the first 85% of the context (several per turn at times, inside chatter),
filler turns between them (notes pasted from held-out documents, generated log excerpts,
small talk), and at the end one question per fact. Messages are dicts with role and content;
a statement turn carries "facts": [fact ids]; each question's assistant turn carries "value"
(the expected value), "fact_id" and the gold answer as content, as training's dialogues do,
so recall_eval.split_dialogue reads both.

Pure standard library; `lists` is training/data/lists.json.
"""
import random

CHARS_PER_TOKEN = 3.6  # prose with the digit tokenizer; the server's count decides the bucket

LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
WORDS = ["anchor", "birch", "canyon", "copper", "dahlia", "fennel", "glacier", "hazel",
         "iris", "lagoon", "marble", "nectar", "orchid", "pebble", "quill", "rustic",
         "saffron", "thistle", "walnut", "meadow", "lantern", "summit", "harvest", "prairie"]
STREETS = ["Alder", "Brook", "Cedar", "Dover", "Elm", "Fairview", "Grove", "Hillcrest",
           "Juniper", "Lakeview", "Mill", "Oakridge", "Pine", "Ridge", "Spruce", "Willow"]
SUFFIXES = ["Street", "Avenue", "Lane", "Road", "Court", "Drive"]


def _plate(r):
    return f"{r.randint(1, 9)}{''.join(r.choice(LETTERS) for _ in range(3))}{r.randint(100, 999)}"


def _wifi(r):
    return f"{r.choice(WORDS)}{r.randint(10, 9999)}"


def _tracking(r):
    return f"TRK{r.randint(10, 99)}-{r.randint(1000, 9999)}-{r.choice(LETTERS)}{r.choice(LETTERS)}"


def _combo(r):
    return "-".join(f"{r.randint(0, 39):02d}" for _ in range(3))


def _parking(r):
    return f"level {r.randint(1, 6)}, spot {r.randint(10, 299)}"


def _address(r):
    return f"{r.randint(12, 9899)} {r.choice(STREETS)} {r.choice(SUFFIXES)}"


def _policy(r):
    return f"{r.choice(LETTERS)}{r.choice(LETTERS)}{r.randint(1000000, 9999999)}"


def _gate(r):
    return f"{r.choice('ABCDEF')}{r.randint(1, 48)}"


def _weight(r):
    return f"{r.randint(3, 40)}.{r.randint(0, 9)} kg"


def _dose(r):
    return f"{r.choice([5, 10, 20, 25, 40, 50, 75, 100, 150, 250])} mg"


# kind: (value maker, noun phrase used in statements and questions, answer template)
KINDS = {
    "plate": (_plate, "the license plate of my rental car", "The plate is {v}."),
    "wifi": (_wifi, "the wifi key at the cabin", "The wifi key is {v}."),
    "tracking": (_tracking, "the tracking ID of my parcel", "It is {v}."),
    "combo": (_combo, "the combination of my bike lock", "The combination is {v}."),
    "parking": (_parking, "my parking place at the airport", "You parked at {v}."),
    "address": (_address, "my sister's new address", "She lives at {v}."),
    "policy": (_policy, "my insurance policy number", "Your policy number is {v}."),
    "gate": (_gate, "my boarding gate in Lisbon", "Your gate is {v}."),
    "weight": (_weight, "the weight of my suitcase", "It weighed {v}."),
    "dose": (_dose, "the dose the vet prescribed", "The vet prescribed {v}."),
    "landlord": (None, "the name of my landlord", "Your landlord is {v}."),
    "mentor": (None, "the name of my new mentor at work", "Your mentor is {v}."),
}

STATE = [
    "Oh, before I forget: {what} is {v}.",
    "Side note, {what} is {v}, just so it's written down somewhere.",
    "For the record, {what} is {v}.",
    "I checked, and {what} turns out to be {v}.",
    "Jotting this here: {what} = {v}.",
    "Not urgent, but {what} is {v}.",
]
CHATTER = [
    "Long day today.", "The weather finally turned.", "I'm planning the week ahead.",
    "Coffee is kicking in.", "Still sorting out the trip.", "Thanks for bearing with me.",
]
STATE_ACK = ["Okay, written down.", "Sure, I have that.", "Understood, I'll hold on to it.",
             "Alright, stored.", "Thanks, that's in my notes now."]
QUESTION = [
    "Quick one: what did I tell you {what} was?",
    "I forgot, what was {what}?",
    "Can you look back and tell me {what}?",
    "Do you still have {what}? What was it?",
    "Remind me, {what}?",
]
NOTES = ["I'm pasting my reading notes from today:", "Some text from a document I'm going "
         "through:", "Here's an excerpt I copied earlier:", "Background reading, no action "
         "needed:"]
NOTES_ACK = ["Those notes are clear.", "Okay, I've gone through the excerpt.",
             "Read it, thanks.", "Got the excerpt; nothing to act on."]
LOG_INTRO = ["Here is what the build server printed:", "The monitoring job reported this:",
             "Output of the nightly script:"]
LOG_ACK = ["The log looks routine.", "Nothing alarming in that output.",
           "Okay, the job seems fine."]
LOG_EVENTS = ["worker started", "cache warmed", "request served", "retrying upload",
              "checkpoint written", "queue drained", "health check passed", "index rebuilt"]
SMALLTALK = [("Any tips for staying focused in the afternoon?",
              "Short breaks, water, and a clear list of the next three tasks help."),
             ("What's a good way to start a journal?",
              "Write a few lines each evening about what happened and what you noticed."),
             ("How do I keep houseplants alive?",
              "Most need bright indirect light and water only when the soil is dry."),
             ("Is it worth learning to touch type?",
              "Yes, it pays back quickly if you type every day.")]
SYSTEM = ["You are a careful assistant who keeps track of details the user mentions.",
          "You help the user stay organised."]


class Generator:
    """Held-out conversations; `docs` are the corpus's held-out documents."""

    def __init__(self, docs, lists, rng: random.Random, tokens: int):
        self.r = rng
        self.tokens = tokens
        self.docs = [d["text"] for d in docs if len(d["text"]) > 2000]
        self.names = lists["female"] + lists["male"]
        self.last = [n.capitalize() for n in WORDS]  # surnames unlike training's list

    def _value(self, kind):
        make = KINDS[kind][0]
        if make is None:
            return f"{self.r.choice(self.names)} {self.r.choice(self.last)}son"
        return make(self.r)

    def _passage(self, chars):
        doc = self.r.choice(self.docs)
        at = self.r.randrange(0, max(1, len(doc) - chars))
        at = doc.find(" ", at) + 1
        return doc[at:at + chars].strip()

    def _log(self, chars):
        r, lines, n = self.r, [], 0
        while n < chars:
            line = (f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} "
                    f"[{r.choice(['info', 'warn', 'info', 'debug'])}] "
                    f"{r.choice(LOG_EVENTS)} ({r.randint(1, 999)} ms)")
            lines.append(line)
            n += len(line) + 1
        return "\n".join(lines)

    def _filler(self, chars):
        r = self.r
        pick = r.random()
        if pick < 0.6:
            return [{"role": "user", "content": f"{r.choice(NOTES)}\n\n{self._passage(chars)}"},
                    {"role": "assistant", "content": r.choice(NOTES_ACK)}]
        if pick < 0.85:
            return [{"role": "user", "content": f"{r.choice(LOG_INTRO)}\n{self._log(chars)}"},
                    {"role": "assistant", "content": r.choice(LOG_ACK)}]
        q, a = r.choice(SMALLTALK)
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    def dialogue(self):
        r = self.r
        count = max(3, min(12, self.tokens // 700 + r.randint(2, 5)))
        kinds = r.sample(sorted(KINDS), min(count, len(KINDS)))
        facts = [(i, k, self._value(k)) for i, k in enumerate(kinds)]
        # Statement turns (1-2 facts each) at random points of the first 85% of the budget.
        turns, i = [], 0
        while i < len(facts):
            take = 2 if r.random() < 0.3 and i + 1 < len(facts) else 1
            turns.append(facts[i:i + take])
            i += take
        budget = self.tokens * CHARS_PER_TOKEN
        places = sorted(r.uniform(0.0, 0.85) for _ in turns)
        messages = [{"role": "system", "content": r.choice(SYSTEM)}] if r.random() < 0.5 else []
        used = 0.0
        for place, group in zip(places, turns):
            while used < place * budget:  # filler up to the statement's place
                chars = int(min(r.uniform(400, 1600), place * budget - used + 50))
                for m in self._filler(max(chars, 200)):
                    messages.append(m)
                    used += len(m["content"]) + 20
            parts = [r.choice(CHATTER)] if r.random() < 0.5 else []
            parts += [r.choice(STATE).format(what=KINDS[k][1], v=v) for _, k, v in group]
            text = " ".join(parts)
            messages.append({"role": "user", "content": text, "facts": [f for f, _, _ in group]})
            messages.append({"role": "assistant", "content": r.choice(STATE_ACK)})
            used += len(text) + 40
        while used < budget:  # filler to the end of the context
            for m in self._filler(int(min(r.uniform(400, 1600), budget - used + 50))):
                messages.append(m)
                used += len(m["content"]) + 20
        order = list(facts)
        r.shuffle(order)
        for fid, kind, value in order:
            what = KINDS[kind][1]
            messages.append({"role": "user", "content": r.choice(QUESTION).format(what=what)})
            messages.append({"role": "assistant", "content": KINDS[kind][2].format(v=value),
                             "value": value, "fact_id": fid, "kind": kind})
        return messages


def templates():
    """Every fixed string of this file that a model could have learned as a pattern."""
    out = STATE + CHATTER + STATE_ACK + QUESTION + NOTES + NOTES_ACK + LOG_INTRO + LOG_ACK
    out += [q for q, _ in SMALLTALK] + [a for _, a in SMALLTALK] + SYSTEM
    out += [k[1] for k in KINDS.values()] + [k[2] for k in KINDS.values()]
    return out


def check_disjoint(training_modules, training_nouns):
    """Offending strings (empty = disjoint): templates here that are strings of training's
    modules (in lists or tuples of their globals), and fact nouns here that contain one of
    training's fact nouns (`training_nouns`, e.g. recall.ENTITY_ATTRS' attributes and
    dialogues.CODE_THINGS) as a word sequence."""
    theirs = set()
    for mod in training_modules:
        for value in vars(mod).values():
            if isinstance(value, (list, tuple)):
                for x in value:
                    items = x if isinstance(x, tuple) else (x,)
                    theirs.update(y for y in items if isinstance(y, str))
    bad = [t for t in templates() if t in theirs]
    for noun in (k[1] for k in KINDS.values()):
        words = f" {noun.lower()} "
        bad += [f"{noun!r} holds training's {t!r}" for t in training_nouns
                if f" {t.lower()} " in words]
    return bad
