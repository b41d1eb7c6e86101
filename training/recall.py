"""Recall-dense generated sessions: one chat session of exactly n raw tokens per row.

Issue 14: the old dialogues held 2-4 facts in ~1-2K tokens, asked back once at the end, so a
6-minute model never learned to copy from far context (full attention recalled no better than
the 64-token window). Here every row is one session, filled to its exact length (no padding,
no packing of unrelated sessions, so every row of a mode has the same gist layout and the
block mask of a (mode, length) is built once):

- many facts (5-40 a session, fewer when short): personal facts (numbers, codes, names, dates,
  places, from dialogues.py) and records in shared lists/tables/tool outputs ("Maria Silva -
  room 4821"), stated at random points of the first three quarters;
- each fact asked back once (30% twice) at a random later point, so the distances between a
  fact's last mention and its answer spread over the whole session (up to 16K tokens);
- prose passages from the corpus (shared or continued by the assistant) fill the gaps;
- `fact_share` sets how much of the text is facts and questions: the curriculum starts with
  dense sessions (many pairs, little prose) and moves to long, prose-heavy ones.

A row carries, per raw token: its id, the 1-based index of the answer value it belongs to (0
for other tokens) and, for answer tokens, the distance in raw tokens from the fact's last
mention to the answer. Pure standard library + numpy; `tok` is a tokenizers.Tokenizer (or the
ByteTokenizer stand-in).
"""
import random

import numpy as np

import copying
import dialogues as dl

CHARS_PER_TOKEN = 3.6   # prose with this tokenizer (digits one a token): an estimate only

ENTITY_ATTRS = [  # (attribute, value kind) for records about people, items and places
    ("room", "num3"), ("extension", "num4"), ("phone number", "phone"), ("badge number", "num5"),
    ("locker code", "num4"), ("order number", "code"), ("ticket number", "code"),
    ("flight", "flight"), ("seat", "seat"), ("start date", "date"), ("city", "place"),
    ("home state", "place"), ("balance", "money"), ("age", "num2"), ("team", "word"),
    ("password", "code"), ("meeting time", "time"), ("account number", "num6"),
]
ITEM_WORDS = ["alpha", "bravo", "cobalt", "delta", "ember", "falcon", "garnet", "harbor",
              "indigo", "juniper", "kestrel", "lumen", "maple", "nimbus", "onyx", "pepper",
              "quartz", "raven", "sierra", "tango", "umber", "violet", "willow", "xenon",
              "yarrow", "zephyr", "atlas", "beacon", "cinder", "dune", "echo", "fjord"]
CITIES = ["Denver", "Austin", "Boston", "Portland", "Seattle", "Chicago", "Atlanta", "Phoenix",
          "Omaha", "Tulsa", "Reno", "Boise", "Dayton", "Madison", "Tampa", "Raleigh", "Fresno",
          "Toledo", "Spokane", "Lincoln", "Albany", "Eugene", "Provo", "Savannah", "Duluth"]
LIST_INTROS = ["Here is the list I mentioned:", "Tool output:", "Please keep this table:",
               "These are the records from the system:", "Search results:",
               "Here is the contact sheet:", "Database rows:", "From the spreadsheet:"]
LIST_ACKS = ["Thanks, I have the list.", "Got the records.", "Noted, I'll keep the table.",
             "Understood, the rows are noted.", "Okay, I have saved them."]
REC_ASK = ["What is the {attr} of {key}?", "What was {key}'s {attr}?",
           "Look up the {attr} for {key}.", "Which {attr} does {key} have?",
           "Remind me of the {attr} of {key}."]
REC_ANSWER = ["The {attr} of {key} is {value}.", "{key}'s {attr} is {value}.",
              "It is {value}.", "{key} has {attr} {value}."]


class Session:
    """`generic_share`: the share of statement groups made by copying.py (arbitrary keys and
    value shapes, siblings, updates, tables, tool output, documents); the rest are the kinds
    below (personal facts and records)."""

    def __init__(self, docs, lists, rng: random.Random, chars_per_token=CHARS_PER_TOKEN,
                 generic_share=0.0):
        self.cpt = chars_per_token
        self.gen = dl.Generator(docs, lists, rng)
        self.rng = rng
        self.first = lists["female"] + lists["male"]
        self.generic_share = generic_share
        self.maker = copying.Maker(rng, copying.corpus_words(self.gen.docs), self.first,
                                   self.gen.states)

    # ---- values
    def _value(self, kind: str) -> str:
        r = self.rng
        if kind.startswith("num"):
            digits = int(kind[3:])
            return str(r.randrange(10 ** (digits - 1), 10 ** digits))
        if kind == "phone":
            return f"{r.randrange(200, 1000)}-{r.randrange(100, 1000)}-{r.randrange(1000, 10000)}"
        if kind == "code":
            return self.gen._code()
        if kind == "flight":
            return f"{r.choice(['UA', 'DL', 'AA', 'LH', 'BA', 'AF'])}{r.randrange(10, 10000)}"
        if kind == "seat":
            return f"{r.randrange(1, 40)}{r.choice('ABCDEF')}"
        if kind == "date":
            return f"{r.choice(dl.MONTHS)} {r.randint(1, 28)}, {r.randrange(1990, 2031)}"
        if kind == "place":
            return r.choice(CITIES + self.gen.states)
        if kind == "money":
            return f"${r.randrange(1, 100000)}.{r.randrange(0, 100):02d}"
        if kind == "time":
            return f"{r.choice(dl.WEEKDAYS)} at {r.randint(1, 12)}:{r.choice(['00', '15', '30', '45'])}"
        return r.choice(ITEM_WORDS + dl.COLORS + dl.ANIMALS)

    def _entity(self) -> str:
        r = self.rng
        style = r.randrange(3)
        if style == 0:
            return f"{r.choice(self.first)} {r.choice(dl.LAST_NAMES)}"
        if style == 1:
            return f"{r.choice(ITEM_WORDS).capitalize()}-{r.randrange(10, 1000)}"
        return f"the {r.choice(ITEM_WORDS)} {r.choice(['project', 'server', 'account', 'unit', 'office'])}"

    def _personal(self):
        """A fact about the user: (statement, question, answer, value)."""
        kinds = ["name", "code", "code", "code", "pet", "home", "birthday", "meeting", "color",
                 "food", "animal", "drink", "instrument", "sport"]
        for _ in range(20):
            thing, value, state, ask, answer = self.gen._fact(self.rng.choice(kinds))
            if thing not in self.used:
                break
        self.used.add(thing)
        return (state.format(thing=thing, value=value), ask.format(thing=thing),
                answer.format(thing=thing, value=value), value)

    def _record(self, attr, kind):
        for _ in range(20):
            key = self._entity()
            if (key, attr) not in self.used:
                break
        self.used.add((key, attr))
        value = self._value(kind)
        r = self.rng
        line = r.choice(["{key} - {attr} {value}", "{key}: {attr} {value}",
                         "{key} | {attr}: {value}", "{attr} of {key}: {value}"])
        return (line.format(key=key, attr=attr, value=value),
                r.choice(REC_ASK).format(attr=attr, key=key),
                r.choice(REC_ANSWER).format(attr=attr, key=key, value=value), value)

    def _generic(self, count):
        """count facts [(fid placeholder, Key, value, shape)] of one copying.py group: a
        sibling (same key but one part, same value shape) beside a fact now and then, and
        keys unique in the session."""
        r, m = self.rng, self.maker
        style = r.choice(copying.STYLES)
        if style == "assist":
            count = 1
        elif style == "doc":
            count = min(count, 3)
        facts = []
        while len(facts) < count:
            if facts and r.random() < 0.35:
                base = r.choice(facts)
                key, shape = m.sibling(base[0]), base[2]
            elif self.recent and r.random() < 0.15:
                key, shape = m.sibling(r.choice(self.recent)), None
            else:
                key, shape = m.key(), None
            ident = key.text("user", 0)
            if ident in self.used:
                continue
            self.used.add(ident)
            forms = key.forms()
            for _ in range(20):  # a value never inside its key, nor equal to another's
                value, got = m.value(shape)
                if (not any(value in t for t in forms)
                        and all(value not in f[1] and f[1] not in value for f in facts)):
                    break
            facts.append((key, value, got))
        self.recent = (self.recent + [f[0] for f in facts])[-20:]
        return style, facts

    def _passage_turns(self, chars: int):
        r = self.rng
        chars = max(120, chars)
        if r.random() < 0.5:
            passage = self.gen._passage(chars)
            cut = passage.find(" ", len(passage) // 2)
            cut = cut if cut > 0 else len(passage) // 2
            return [("user", f"{r.choice(dl.CONTINUE)}\n\n{passage[:cut].strip()}", None),
                    ("assistant", passage[cut:].strip(), None)]
        return [("user", f"{r.choice(dl.SHARE)}\n\n{self.gen._passage(chars)}", None),
                ("assistant", r.choice(dl.SHARE_ACK), None)]

    # ---- a session
    def messages(self, n_tokens: int, fact_share: float):
        """Messages [(role, content, marks)] of about n_tokens raw tokens; marks is None or a
        list of (kind, fact id, value, row text) for the values inside the content ('state'/'answer')."""
        r = self.rng
        self.used = set()  # things and (entity, attribute) pairs: no two facts share a question
        self.recent = []   # keys of copying.py facts, for siblings across groups
        chars = int(n_tokens * self.cpt)
        # a fact costs ~150 chars all told, a copying.py fact ~250 (longer keys, documents)
        cap = max(2, int(chars * fact_share / (150 + 100 * self.generic_share)))
        n_facts = r.randint(min(5, cap), min(40, cap))
        # Statement groups: personal facts (1-3 a turn) or record lists (3-12 rows, one attr).
        groups, made = [], 0
        while made < n_facts:
            left = n_facts - made
            if self.generic_share and r.random() < self.generic_share:
                style, rows = self._generic(min(left, r.randint(1, 8)))
                groups.append(("generic", (style, rows)))
                made += len(rows)
                continue
            if r.random() < 0.55 and left >= 3:
                attr, kind = r.choice(ENTITY_ATTRS)
                rows = [self._record(attr, kind) for _ in range(min(left, r.randint(3, 12)))]
                groups.append(("list", rows))
            else:
                rows = [self._personal() for _ in range(min(left, r.randint(1, 3)))]
                groups.append(("turn", rows))
            made += len(rows)
        # Timeline in characters: statements in the first 75%, questions after them.
        events = []  # (char position, order, kind, payload)
        fact_id = 0
        mk = self.maker
        for kind, rows in groups:
            at = r.uniform(0, 0.75) * chars
            if kind == "generic":
                style, facts = rows
                ids = list(range(fact_id, fact_id + len(facts)))
                fact_id += len(facts)
                events.append((at, 0, "generic", (style, [(fid, key, value) for fid, (key, value, _)
                                                           in zip(ids, facts)])))
                for fid, (key, value, shape) in zip(ids, facts):
                    lo = at
                    if r.random() < 0.12:  # the value changes later; asks want the new one
                        new = mk.value(shape)[0]
                        if (value not in new and new not in value
                                and not any(new in t for t in key.forms())):
                            lo = r.uniform(at, at + 0.6 * (chars - at))
                            text, off = mk.update(key, new, value)
                            events.append((lo, 0, "update", (fid, text, off, new)))
                            value = new
                    if r.random() < 0.15:  # a distractor: stated, never asked
                        continue
                    for _ in range(2 if r.random() < 0.3 else 1):
                        q = (r.uniform(lo, chars) if r.random() < 0.5
                             else chars - (chars - lo) * r.random() ** 2)
                        answer, off = mk.answer(key, value)
                        events.append((q, 1, "ask", (fid, (None, mk.question(key), answer,
                                                          value, off))))
                        lo = q
                continue
            ids = list(range(fact_id, fact_id + len(rows)))
            fact_id += len(rows)
            events.append((at, 0, kind, list(zip(ids, rows))))
            for fid, row in zip(ids, rows):
                asks = 2 if r.random() < 0.3 else 1
                lo = at
                for _ in range(asks):
                    if r.random() < 0.5:  # uniform over what is left, or biased far
                        q = r.uniform(lo, chars)
                    else:
                        q = chars - (chars - lo) * r.random() ** 2
                    events.append((q, 1, "ask", (fid, row)))
                    lo = q
        events.sort(key=lambda e: (e[0], e[1]))
        # Merge questions that land close together into one turn (1-3 questions).
        timeline = []
        for e in events:
            if (e[2] == "ask" and timeline and timeline[-1][2] == "asks"
                    and e[0] - timeline[-1][0] < 200 and len(timeline[-1][3]) < 3
                    and all(p[0] != e[3][0] for p in timeline[-1][3])
                    and all(p[1][3] not in e[3][1][1] and e[3][1][3] not in p[1][1]
                            for p in timeline[-1][3])):  # no value inside a neighbour question
                timeline[-1][3].append(e[3])
            elif e[2] == "ask":
                timeline.append((e[0], 1, "asks", [e[3]]))
            else:
                timeline.append(e)
        msgs = []
        if r.random() < 0.5:
            msgs.append(("system", r.choice(dl.SYSTEM_PROMPTS), None))
        used = 0
        for at, _, kind, payload in timeline:
            gap = at - used
            if gap > 300:
                for m in self._passage_turns(int(gap - 120)):
                    msgs.append(m)
                    used += len(m[1]) + 40
            if kind == "turn":
                text = " ".join(row[0] for _, row in payload)
                msgs.append(("user", text, [("state", fid, row[3], row[0]) for fid, row in payload]))
                msgs.append(("assistant", r.choice(dl.ACKS), None))
            elif kind == "generic":
                style, facts = payload
                doc = lambda c: self.gen._passage(min(c, max(200, chars // 12)))  # noqa: E731
                msgs.extend(copying.state_group(mk, facts, style, doc))
            elif kind == "update":
                fid, text, off, value = payload
                msgs.append(("user", text, [("state", fid, value, text, off)]))
                msgs.append(("assistant", r.choice(copying.ACK), None))
            elif kind == "list":
                attr_lines = "\n".join(row[0] for _, row in payload)
                msgs.append(("user", f"{r.choice(LIST_INTROS)}\n{attr_lines}",
                             [("state", fid, row[3], row[0]) for fid, row in payload]))
                msgs.append(("assistant", r.choice(LIST_ACKS), None))
            else:
                msgs.append(("user", " ".join(row[1] for _, row in payload), None))
                msgs.append(("assistant", " ".join(row[2] for _, row in payload),
                             [("answer", fid, row[3], row[2]) + tuple(row[4:])
                              for fid, row in payload]))
            used += sum(len(m[1]) + 40 for m in msgs[-2:])
        if used < chars:
            msgs.extend(self._passage_turns(int(chars - used + 400)))
        return msgs


def render(msgs, bos: str = dl.BOS):
    """Text, and the marks as (kind, fact id, char start, char end) in text order. A mark of
    the messages is (kind, fact id, value, row[, offset of the value in row]); without the
    offset the value is the last match in its row."""
    parts, marks, at = [bos], [], len(bos)
    for role, content, vals in msgs:
        head = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
        at += len(head)
        content = content.strip()
        if vals:
            search = 0
            for kind, fid, value, row, *off in vals:
                i = content.index(row, search) + (off[0] if off else row.rindex(value))
                marks.append((kind, fid, at + i, at + i + len(value)))
                search = i + len(value)
        parts.append(head + content + "<|eot_id|>")
        at += len(content) + len("<|eot_id|>")
    return "".join(parts), marks


def encode_session(tok, text, marks, n: int):
    """-> ids int32 [<=n], values int16 [<=n] (1-based answer index), dist int32 [<=n]
    (raw-token distance from the fact's last mention to the answer, on answer tokens)."""
    enc = tok.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids[:n], dtype=np.int32)
    starts = np.asarray([o[0] for o in enc.offsets[:n]], dtype=np.int64)
    ends = np.asarray([o[1] for o in enc.offsets[:n]], dtype=np.int64)
    values = np.zeros(len(ids), dtype=np.int16)
    dist = np.zeros(len(ids), dtype=np.int32)
    last = {}
    answer = 0
    for kind, fid, a, b in marks:
        sel = np.nonzero((starts < b) & (ends > a))[0]
        if len(sel) == 0:  # beyond the cut
            break
        first = int(sel[0])
        if kind == "answer" and fid in last and int(sel[-1]) < len(ids) - 1:
            answer += 1
            if answer < 32767:
                values[sel] = answer
                dist[sel] = first - last[fid]
        last[fid] = first
    return ids, values, dist


def make_row(tok, session: Session, n: int, fact_share: float):
    """One session of exactly n raw tokens (prose appended when the estimate fell short)."""
    msgs = session.messages(n, fact_share)
    while True:
        text, marks = render(msgs)
        ids, values, dist = encode_session(tok, text, marks, n)
        if len(ids) >= n:
            return ids, values, dist
        msgs.extend(session._passage_turns(int((n - len(ids)) * session.cpt) + 400))
