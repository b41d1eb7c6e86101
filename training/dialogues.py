"""Generated multi-turn dialogues that test memory across long distractor stretches.

A user states facts (a name, numbers, codes, preferences); then long turns of prose from the
corpus pass (text the assistant continues, or passages the user shares); then the user asks
the facts back and the assistant answers them. With a window of W raw tokens, the answer can
only come through the gist tokens, so the answers' tokens measure what the gists keep.

Deterministic for a given random.Random; pure standard library. `render` writes the Llama-3
chat format (the same text as the C++ engine's chat template) and returns the character
spans of the answer values, which the evaluation scores token by token.
"""
import bisect
import random
import re
import string

BOS = "<|begin_of_text|>"

LAST_NAMES = ["Moreno", "Okafor", "Lindqvist", "Haddad", "Tanaka", "Kowalski", "Nguyen",
              "Fitzgerald", "Abernathy", "Castillo", "Petrov", "Mbeki", "Schulz", "Dubois",
              "Rossi", "Yilmaz", "Kaur", "Silva", "Jensen", "Novak", "Osei", "Brennan",
              "Takahashi", "Ivanova", "Larsen", "Mendez", "Achebe", "Horvath", "Quinn", "Park",
              "Sato", "Walsh", "Fischer", "Barros", "Eklund", "Varga", "Adeyemi", "Costa"]
COLORS = ["red", "blue", "green", "teal", "purple", "orange", "yellow", "maroon", "navy",
          "turquoise", "lavender", "crimson", "olive", "indigo", "gold", "silver", "coral"]
FOODS = ["pizza", "sushi", "lasagna", "tacos", "pancakes", "ramen", "curry", "paella",
         "dumplings", "falafel", "risotto", "goulash", "burritos", "pho", "moussaka", "chili"]
ANIMALS = ["otter", "owl", "fox", "dolphin", "tiger", "penguin", "horse", "wolf", "koala",
           "elephant", "giraffe", "hedgehog", "lynx", "raven", "panda", "badger"]
DRINKS = ["green tea", "black coffee", "lemonade", "orange juice", "hot chocolate",
          "sparkling water", "chai", "espresso", "iced tea", "apple cider"]
INSTRUMENTS = ["piano", "violin", "cello", "guitar", "flute", "drums", "trumpet", "harp",
               "clarinet", "saxophone", "banjo", "accordion"]
SPORTS = ["tennis", "soccer", "basketball", "chess", "cycling", "swimming", "rowing",
          "volleyball", "climbing", "fencing", "hockey", "archery"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CODE_THINGS = ["locker code", "door code", "PIN", "room number", "order number",
               "employee ID", "ticket number", "parking spot", "account number",
               "apartment number", "seat number", "badge number", "gate code",
               "extension", "case number", "booking reference", "member ID", "invoice number"]
PETS = ["dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish", "pony"]

SYSTEM_PROMPTS = [
    "You are a helpful assistant. Remember what the user tells you.",
    "You are a concise assistant with a long memory.",
    "You are a friendly assistant. Answer briefly.",
]
ACKS = ["Got it, I will remember that.", "Noted.", "Okay, I'll keep that in mind.",
        "Thanks, noted.", "Understood. I'll remember.", "All right, I have noted it."]
STATE = ["My {thing} is {value}.", "Please remember that my {thing} is {value}.",
         "By the way, my {thing} is {value}.", "Note this down: my {thing} is {value}.",
         "For later: my {thing} is {value}.", "Just so you know, my {thing} is {value}."]
ASK = ["What is my {thing}?", "Can you remind me of my {thing}?", "What was my {thing} again?",
       "Do you remember my {thing}?", "Tell me my {thing}, please.", "What's my {thing}?"]
ANSWER = ["Your {thing} is {value}.", "Your {thing} is {value}.",
          "You told me your {thing} is {value}.", "It is {value}."]
SHARE = ["Here is a passage I am reading:", "Take a look at this text:",
         "I found this passage today:", "Here is something from my notes:"]
SHARE_ACK = ["Thanks for sharing it.", "Thank you, I have read it.", "Interesting, thanks.",
             "I see. Thanks for the passage."]
CONTINUE = ["Continue this text:", "Please continue the following passage:",
            "Write what comes next:", "Carry on from here:"]


class Generator:
    """Makes dialogues from corpus documents (the distractors) and name lists."""

    def __init__(self, docs, lists, rng: random.Random, max_chars=(1700, 3300)):
        # Distractor text: documents long enough to cut passages from, with the offsets of
        # their paragraphs (found once: a passage starts at one).
        self.docs = [d["text"] for d in docs if len(d["text"]) > 1500]
        self.starts = [[0] + [m.end() for m in re.finditer("\n\n", doc)] for doc in self.docs]
        self.first = lists["female"] + lists["male"]
        self.states = lists["states"]
        self.rng = rng
        self.max_chars = max_chars

    # ---- facts: (thing, value, statement, question, answer); the answer holds value once.
    def _code(self) -> str:
        r = self.rng
        style = r.randrange(4)
        if style == 0:
            return str(r.randrange(10 ** r.randint(2, 3), 10 ** r.randint(4, 6)))
        if style == 1:
            letters = "".join(r.choice(string.ascii_uppercase) for _ in range(r.randint(1, 3)))
            return f"{letters}-{r.randrange(100, 100000)}"
        if style == 2:
            return "".join(r.choice(string.ascii_uppercase + string.digits)
                           for _ in range(r.randint(4, 7)))
        return f"{r.randrange(10, 1000)}-{r.randrange(1000, 10000)}"

    def _fact(self, kind: str):
        r = self.rng
        if kind == "name":
            value = f"{r.choice(self.first)} {r.choice(LAST_NAMES)}"
            return ("name", value, r.choice(["My name is {value}.", "I'm {value}, by the way.",
                                              "Hi, I am {value}."]),
                    r.choice(["What is my name?", "Do you remember my name?",
                              "Who am I? Tell me my name."]),
                    r.choice(["Your name is {value}.", "You are {value}."]))
        if kind == "code":
            thing = r.choice(CODE_THINGS)
            return thing, self._code(), r.choice(STATE), r.choice(ASK), r.choice(ANSWER)
        if kind == "pet":
            pet, value = r.choice(PETS), r.choice(self.first)
            return (f"{pet}'s name", value, f"My {pet} is called {{value}}.",
                    f"What is my {pet} called?", f"Your {pet} is called {{value}}.")
        if kind == "home":
            value = r.choice(self.states)
            return ("home state", value, "I live in {value}.",
                    r.choice(["Where do I live?", "Which state do I live in?"]),
                    "You live in {value}.")
        if kind == "birthday":
            value = f"{r.choice(MONTHS)} {r.randint(1, 28)}"
            return "birthday", value, r.choice(STATE), r.choice(ASK), r.choice(ANSWER)
        if kind == "meeting":
            value = f"{r.choice(WEEKDAYS)} at {r.randint(1, 12)}:{r.choice(['00', '15', '30', '45'])}"
            return ("meeting", value, "My meeting is on {value}.", "When is my meeting?",
                    "Your meeting is on {value}.")
        pools = {"color": COLORS, "food": FOODS, "animal": ANIMALS, "drink": DRINKS,
                 "instrument": INSTRUMENTS, "sport": SPORTS}
        value = r.choice(pools[kind])
        thing = f"favorite {kind}"
        return thing, value, r.choice(STATE), r.choice(ASK), r.choice(ANSWER)

    def _passage(self, chars: int) -> str:
        """About `chars` characters of one document, starting at a paragraph and ending at a
        word boundary."""
        index = self.rng.randrange(len(self.docs))
        doc, starts = self.docs[index], self.starts[index]
        usable = bisect.bisect_left(starts, len(doc) - chars)  # starts that leave room
        start = starts[self.rng.randrange(usable)] if usable else 0
        piece = doc[start:start + chars]
        cut = piece.rfind(" ")
        return (piece[:cut] if cut > chars // 2 else piece).strip()

    def dialogue(self):
        """A list of messages {role, content, value?}; `value` marks an answer's value."""
        r = self.rng
        kinds = ["name", "code", "code", "code", "pet", "home", "birthday", "meeting", "color",
                 "food", "animal", "drink", "instrument", "sport"]
        facts, things, count = [], set(), r.randint(2, 4)
        while len(facts) < count:
            fact = self._fact(r.choice(kinds))
            if fact[0] not in things:
                things.add(fact[0])
                facts.append(fact)
        messages = []
        if r.random() < 0.5:
            messages.append({"role": "system", "content": r.choice(SYSTEM_PROMPTS)})

        # Facts are stated early, one or two a turn; each turn is acknowledged.
        order = list(facts)
        i = 0
        while i < len(order):
            take = min(len(order) - i, r.randint(1, 2))
            text = " ".join(f[2].format(thing=f[0], value=f[1]) for f in order[i:i + take])
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": r.choice(ACKS)})
            i += take

        # Distractors fill the budget left after the questions (about 90 chars each) and the
        # chat headers and prompts of the distractor turns (about 100 chars a turn).
        used = sum(len(m["content"]) + 40 for m in messages) + 130 * len(facts)
        turns = r.randint(1, 3)
        budget = r.randint(*self.max_chars) - used - 100 * turns
        for _ in range(turns):
            size = max(200, budget // turns)
            if r.random() < 0.5:
                # The assistant continues the very text the user gave: plain language
                # modelling inside a chat, the way a long reply reads.
                passage = self._passage(size)
                cut = passage.find(" ", len(passage) // 2)
                cut = cut if cut > 0 else len(passage) // 2
                messages.append({"role": "user", "content":
                                 f"{r.choice(CONTINUE)}\n\n{passage[:cut].strip()}"})
                messages.append({"role": "assistant", "content": passage[cut:].strip()})
            else:
                messages.append({"role": "user",
                                 "content": f"{r.choice(SHARE)}\n\n{self._passage(size)}"})
                messages.append({"role": "assistant", "content": r.choice(SHARE_ACK)})

        # Questions, in another order than the facts were stated.
        asked = list(facts)
        r.shuffle(asked)
        for thing, value, _, question, answer in asked:
            messages.append({"role": "user", "content": question.format(thing=thing)})
            messages.append({"role": "assistant", "content": answer.format(thing=thing,
                                                                           value=value),
                             "value": value})
        return messages


def render(messages, bos: str = BOS):
    """Llama-3 chat text and the (start, end) character spans of every answer value."""
    text, spans = bos, []
    for m in messages:
        text += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
        content = m["content"].strip()
        if "value" in m:
            at = content.rindex(m["value"])
            spans.append((len(text) + at, len(text) + at + len(m["value"])))
        text += content + "<|eot_id|>"
    return text, spans
