"""What the synthetic speakers say: a sentence grammar, an FSC-style command grammar, keywords.

Three utterance kinds feed different downstream tasks:

* ``sentence``: phonetically varied read sentences (5–12 words, 2–4 s of speech) for
  phone recognition, ASR and speaker tasks. The grammar is small but its word lists
  (a few hundred words) cover every English phoneme in many contexts.
* ``command``: Fluent-Speech-Commands-style requests labelled with an intent
  ``(action, object, location)``; the 31 intents and their slot values follow FSC.
  Each intent has several phrasings so a model must map *different words* to one
  label, as in FSC.
* ``keyword``: SUPERB Speech Commands classes: ten keywords, ``_unknown_`` (other
  short words) and ``_silence_`` (noise only).

Everything here is pure and deterministic: randomness comes in as a ``random.Random``
the caller seeded, and *which* label an utterance gets is decided by the caller
(``synth.py`` cycles through ``INTENTS`` and ``KEYWORD_CLASSES`` to keep them balanced).
"""

from __future__ import annotations

import random

# -- keyword spotting (SUPERB KS: Speech Commands v1, 12 classes) ---------------------------

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
KEYWORD_CLASSES = KEYWORDS + (UNKNOWN, SILENCE)

# Speech Commands' auxiliary words, plus a few more so `_unknown_` is not a 25-word class.
UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four",
    "happy", "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three",
    "tree", "two", "visual", "wow", "zero", "apple", "window", "yellow", "music", "table",
)


def keyword_text(label: str, rng: random.Random) -> str:
    """The word spoken for keyword class ``label`` (``""`` for ``_silence_``)."""
    if label == SILENCE:
        return ""
    if label == UNKNOWN:
        return rng.choice(UNKNOWN_WORDS)
    if label not in KEYWORDS:
        raise ValueError(f"unknown keyword class {label!r}; expected one of {KEYWORD_CLASSES}")
    return label


# -- intent classification (Fluent Speech Commands) -----------------------------------------

ROOMS = ("kitchen", "bedroom", "washroom")
LANGUAGES = ("chinese", "korean", "english", "german")

# {in} becomes " in the kitchen" (or nothing), {room} becomes "kitchen " (or nothing), so
# one template yields both the located and the unlocated phrasing.
_PHRASES = {
    ("activate", "lights"): (
        "turn on the lights{in}", "switch on the {room}lights", "lights on{in}",
        "turn the {room}lights on", "put the lights on{in}",
    ),
    ("deactivate", "lights"): (
        "turn off the lights{in}", "switch off the {room}lights", "lights off{in}",
        "turn the {room}lights off", "kill the lights{in}",
    ),
    ("increase", "heat"): (
        "turn up the heat{in}", "increase the {room}heating", "make it warmer{in}",
        "raise the temperature{in}", "turn the {room}heat up",
    ),
    ("decrease", "heat"): (
        "turn down the heat{in}", "decrease the {room}heating", "make it cooler{in}",
        "lower the temperature{in}", "turn the {room}heat down",
    ),
    ("activate", "lamp"): ("turn on the lamp", "switch the lamp on", "lamp on", "light the lamp"),
    ("deactivate", "lamp"): ("turn off the lamp", "switch the lamp off", "lamp off"),
    ("activate", "music"): ("play the music", "put on some music", "start the music", "music on"),
    ("deactivate", "music"): ("stop the music", "turn off the music", "pause the music", "music off"),
    ("increase", "volume"): ("turn up the volume", "make it louder", "increase the volume", "volume up"),
    ("decrease", "volume"): (
        "turn down the volume", "make it quieter", "decrease the volume", "volume down",
    ),
    ("bring", "newspaper"): (
        "bring me the newspaper", "get me the newspaper", "fetch the newspaper", "i need the paper",
    ),
    ("bring", "juice"): ("bring me some juice", "get me a glass of juice", "fetch the juice", "i want juice"),
    ("bring", "socks"): ("bring me my socks", "get my socks", "fetch my socks", "i need socks"),
    ("bring", "shoes"): ("bring me my shoes", "get my shoes", "fetch my shoes", "i need shoes"),
    ("change language", "none"): (
        "change the language", "switch the language", "use a different language", "change language",
    ),
    **{
        ("change language", lang): (
            f"change the language to {lang}", f"switch to {lang}", f"set the language to {lang}",
            f"speak {lang}", f"use {lang}",
        )
        for lang in LANGUAGES
    },
}

# (action, object, location); lights and heat can be anywhere, everything else has no location.
INTENTS: tuple[tuple[str, str, str], ...] = tuple(
    (action, obj, location)
    for (action, obj), templates in _PHRASES.items()
    for location in (("none",) + ROOMS if "{in}" in "".join(templates) else ("none",))
)

INTENT_SLOTS = {
    slot: sorted({intent[i] for intent in INTENTS})
    for i, slot in enumerate(("action", "object", "location"))
}


def intent_dict(intent: tuple[str, str, str]) -> dict:
    action, obj, location = intent
    return {"action": action, "object": obj, "location": location}


def command_phrasings(intent: tuple[str, str, str]) -> list[str]:
    """Every distinct phrasing of ``intent`` (at least three)."""
    action, obj, location = intent
    located = location != "none"
    out: list[str] = []
    for template in _PHRASES[(action, obj)]:
        text = template.format(
            **{"in": f" in the {location}" if located else "", "room": f"{location} " if located else ""}
        )
        if text not in out:
            out.append(text)
    return out


def command_text(intent: tuple[str, str, str], rng: random.Random) -> str:
    return rng.choice(command_phrasings(intent))


# -- read sentences ---------------------------------------------------------------------------

NAMES = (
    "anna", "victor", "george", "judy", "theo", "zoe", "martha", "hugo", "yusuf", "beth",
    "oliver", "chloe", "dmitri", "fatima", "kevin", "lucy", "norman", "priya", "quentin", "rosa",
    "samuel", "thelma", "uma", "walter", "xavier", "yvonne", "hazel", "ivan", "joshua", "kate",
    "leonard", "megan", "nigel", "ophelia", "patrick", "ruth", "simon", "vera", "edgar", "gwen",
)
# Singular nouns whose plural is the noun plus "s".
NOUNS = (
    "bottle", "jacket", "pencil", "garden", "teacher", "window", "ticket", "basket", "blanket",
    "bridge", "candle", "carpet", "castle", "chair", "cookie", "drawer", "engine", "feather",
    "flower", "guitar", "hammer", "helmet", "island", "kettle", "ladder", "lemon", "letter",
    "magnet", "mirror", "monkey", "needle", "orange", "packet", "parrot", "pillow", "planet",
    "puzzle", "rabbit", "ribbon", "rocket", "saddle", "shovel", "singer", "spider", "statue",
    "stove", "sweater", "thread", "tiger", "towel", "tractor", "treasure", "tunnel", "violin",
    "wagon", "wallet", "whistle", "wizard", "yacht", "zipper", "boat", "cake", "coin", "drum",
    "frog", "goat", "hat", "key", "map", "shoe", "song", "thumb", "wheel", "voice", "judge",
)
ADJECTIVES = (
    "ancient", "bitter", "brave", "bright", "broken", "busy", "calm", "cheap", "clever", "cold",
    "crooked", "dusty", "eager", "empty", "fancy", "fragile", "frozen", "gentle", "golden",
    "heavy", "hollow", "huge", "jolly", "lazy", "little", "lonely", "loud", "muddy", "narrow",
    "noisy", "pleasant", "polished", "purple", "quiet", "rough", "rusty", "shiny", "silver",
    "smooth", "sour", "strange", "sturdy", "thick", "tiny", "usual", "velvet", "warm", "wooden",
    "yellow", "zealous",
)
# (base, past) of transitive verbs, including irregular ones for more varied word endings.
VERBS = (
    ("paint", "painted"), ("clean", "cleaned"), ("carry", "carried"), ("fix", "fixed"),
    ("open", "opened"), ("watch", "watched"), ("visit", "visited"), ("follow", "followed"),
    ("borrow", "borrowed"), ("wash", "washed"), ("push", "pushed"), ("pull", "pulled"),
    ("measure", "measured"), ("deliver", "delivered"), ("describe", "described"),
    ("polish", "polished"), ("judge", "judged"), ("chase", "chased"), ("hide", "hid"),
    ("buy", "bought"), ("find", "found"), ("take", "took"), ("see", "saw"), ("throw", "threw"),
    ("keep", "kept"), ("sell", "sold"), ("build", "built"), ("catch", "caught"),
    ("break", "broke"), ("choose", "chose"), ("draw", "drew"), ("forget", "forgot"),
    ("hold", "held"), ("shake", "shook"), ("steal", "stole"), ("weigh", "weighed"),
    ("bury", "buried"), ("examine", "examined"), ("admire", "admired"), ("review", "reviewed"),
)
PLACES = (
    "station", "harbour", "library", "market", "museum", "village", "forest", "valley",
    "factory", "bakery", "hospital", "theatre", "garage", "cellar", "attic", "beach", "bridge",
    "church", "desert", "farm", "hotel", "island", "jungle", "kitchen", "lake", "meadow",
    "office", "palace", "playground", "river", "school", "stadium", "temple", "tower", "zoo",
    "airport", "canyon", "orchard", "warehouse", "workshop",
)
NUMBERS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fifteen", "twenty", "thirty", "forty", "fifty", "a hundred", "a thousand",
)
TIMES = (
    "yesterday", "last night", "this morning", "on monday", "on tuesday", "on wednesday",
    "on thursday", "on friday", "on saturday", "on sunday", "at noon", "at midnight",
    "in january", "in april", "in july", "in october", "last week", "every evening",
    "before dawn", "after lunch",
)
ADVERBS = (
    "quietly", "slowly", "carefully", "quickly", "happily", "gently", "eagerly", "rarely",
    "suddenly", "proudly", "nervously", "barely",
)
PREPOSITIONS = ("near", "behind", "under", "beside", "inside", "across", "above", "outside")

# Each template has 5–12 words whatever fills it; {noun2}/{name2} give a second, different draw.
_SENTENCES = (
    "{name} {past} the {adj} {noun} {prep} the {place}",
    "the {adj} {noun} was {prep} the {place} {time}",
    "{name} and {name2} {past} {number} {noun}s {time}",
    "did {name} {verb} the {noun} {prep} the {adj} {place}",
    "we should {verb} the {adj} {noun} before {name} comes back",
    "my {noun} {past} {adverb} {prep} the old {place} {time}",
    "please {verb} {number} {adj} {noun}s for {name}",
    "nobody knew why the {noun} {past} the {adj} {noun2}",
    "{name} thinks the {noun} {prep} the {place} is too {adj}",
    "how many {noun}s did {name} {verb} {time}",
    "{time} {name} {adverb} {past} the {noun} and the {noun2}",
    "the {noun}s {prep} the {place} look {adj} and {adj2}",
    "{name} never wanted to {verb} that {noun} {prep} the {place}",
    "{number} {adj} {noun}s were found {prep} the {place} {time}",
)


def sentence(rng: random.Random) -> str:
    """One read sentence: a random template filled with random words."""
    verb, past = rng.choice(VERBS)
    name, name2 = rng.sample(NAMES, 2)
    noun, noun2 = rng.sample(NOUNS, 2)
    adj, adj2 = rng.sample(ADJECTIVES, 2)
    return rng.choice(_SENTENCES).format(
        name=name, name2=name2, noun=noun, noun2=noun2, adj=adj, adj2=adj2, verb=verb, past=past,
        place=rng.choice(PLACES), prep=rng.choice(PREPOSITIONS), number=rng.choice(NUMBERS),
        time=rng.choice(TIMES), adverb=rng.choice(ADVERBS),
    )
