"""English sentences for the synthetic corpus, generated from a small grammar.

Why a grammar and not a fixed list: val/test must hold sentences never heard in training, and
a corpus of an hour needs over a thousand distinct sentences. The templates give varied
sentence types (statements, questions, exclamations, lists, RAVDESS-like short statements) so
that espeak's intonation varies, and the word lists were chosen for phonetic coverage: every
ARPAbet phone occurs (ZH, OY, UH and DH included), bilabials and rounded vowels often. All words
are in the CMU dictionary that ships with pocketsphinx (a test checks), so the synthetic audio
can also be force-aligned.
"""

from __future__ import annotations

import numpy as np

NAMES = (
    "Bob", "Maya", "Paul", "Emma", "Ben", "Molly", "Peter", "Ruth", "George", "Judy", "Oliver",
    "Joyce", "Hugo", "Sophie", "Victor", "Zoe", "Thomas", "Martha", "Kevin", "Nora", "Walter",
    "Lucy", "Charles", "Amy", "Andrew", "Ella", "Bill", "Mary", "Edward", "Beth",
)  # fmt: skip
ADJECTIVES = (
    "big", "blue", "bright", "brown", "busy", "calm", "cheap", "cold", "cool", "dark", "deep",
    "empty", "famous", "fresh", "funny", "gentle", "golden", "green", "happy", "heavy", "huge",
    "little", "loud", "lovely", "new", "odd", "old", "pale", "plain", "proud", "purple", "quiet",
    "rough", "round", "small", "smooth", "soft", "strange", "strong", "sweet", "thin", "tiny",
    "usual", "warm", "wet", "white", "wide", "wooden", "young", "beautiful", "boring", "noisy",
)  # fmt: skip
NOUNS = (
    "apple", "baby", "bag", "ball", "basket", "beach", "bear", "bed", "bike", "bird", "boat",
    "book", "boot", "bottle", "box", "boy", "bread", "bridge", "broom", "bubble", "bus",
    "butter", "cake", "camera", "car", "cat", "chair", "cheese", "child", "church", "clock",
    "cloud", "coat", "coin", "cook", "cup", "dog", "door", "dream", "drum", "egg", "engine",
    "farmer", "father", "fish", "flower", "foot", "fox", "garage", "garden", "girl", "glass",
    "goose", "hammer", "horse", "house", "island", "jacket", "judge", "kitchen", "lamp",
    "letter", "machine", "map", "market", "measure", "mirror", "money", "monkey", "moon",
    "morning", "mother", "mouse", "mouth", "music", "noise", "ocean", "oil", "orange", "paper",
    "parrot", "piano", "picture", "pillow", "pizza", "plate", "pool", "potato", "puppy",
    "purse", "queen", "rabbit", "river", "road", "robot", "roof", "room", "rope", "school",
    "sheep", "ship", "shoe", "soup", "spoon", "storm", "sugar", "table", "teacher", "thing",
    "thumb", "toy", "train", "treasure", "tree", "truck", "umbrella", "valley", "village",
    "violin", "vision", "voice", "wagon", "wall", "watch", "water", "window", "wolf", "woman",
    "world", "yard", "zoo",
)  # fmt: skip
PLURALS = (
    "apples", "babies", "balls", "bears", "birds", "boats", "books", "boots", "boxes", "boys",
    "bubbles", "cats", "children", "clouds", "coins", "cookies", "dogs", "flowers", "friends",
    "girls", "horses", "kids", "lamps", "letters", "maps", "monkeys", "mushrooms", "papers",
    "people", "pictures", "plums", "puppies", "rabbits", "ships", "shoes", "spoons", "stamps",
    "tools", "toys", "trees", "visitors", "wolves", "women", "workers",
)  # fmt: skip
VERBS_PAST = (
    "bought", "brought", "built", "carried", "cleaned", "dropped", "found", "grabbed", "hid",
    "kept", "kicked", "lifted", "loved", "moved", "mopped", "opened", "painted", "pulled",
    "pushed", "saw", "shook", "showed", "sold", "stopped", "took", "touched", "threw", "used",
    "visited", "washed", "watched", "wrapped", "fixed", "measured", "borrowed", "bumped",
)  # fmt: skip
VERBS_BASE = (
    "bring", "buy", "carry", "clean", "close", "drop", "find", "fix", "grab", "hide", "keep",
    "lift", "move", "open", "paint", "pull", "push", "see", "show", "sell", "stop", "take",
    "touch", "throw", "use", "wash", "watch", "wrap", "measure", "borrow", "bump", "enjoy",
)  # fmt: skip
VERBS_ING = (
    "building", "carrying", "cleaning", "cooking", "drawing", "eating", "fixing", "holding",
    "moving", "painting", "playing", "pushing", "reading", "singing", "talking", "washing",
    "watching", "wrapping", "measuring", "enjoying", "looking at", "thinking about",
)  # fmt: skip
INTRANSITIVE = (
    "are talking", "are sitting", "are playing", "are waiting", "are laughing", "are sleeping",
    "were singing", "were jumping", "were hiding", "were shouting", "will arrive", "might move",
)  # fmt: skip
PREPOSITIONS = (
    "by", "near", "behind", "under", "beside", "inside", "above", "across", "along", "beyond",
    "from", "into", "onto", "over", "past", "through", "toward", "with", "without", "upon",
)  # fmt: skip
PLACES = (
    "the door", "the bridge", "the window", "the pool", "the market", "the museum", "the garage",
    "the beach", "the old barn", "the bus stop", "the big tree", "the kitchen table", "the zoo",
    "the village", "the top shelf", "the warm room", "the boat house", "the shop", "the pub",
)  # fmt: skip
TIMES = (
    "today", "tomorrow", "yesterday", "this morning", "last night", "every Monday",
    "before lunch", "after dinner", "in the evening", "at noon", "on Thursday", "all summer",
    "by the weekend", "once a month", "right now", "at the moment",
)  # fmt: skip
ADVERBS = (
    "slowly", "quickly", "quietly", "happily", "badly", "boldly", "carefully", "gently",
    "loudly", "proudly", "smoothly", "usually", "obviously", "barely", "probably",
)  # fmt: skip
FEELINGS = (
    "amazing", "awful", "beautiful", "boring", "brilliant", "funny", "horrible", "lovely",
    "marvelous", "perfect", "pleasant", "terrible", "unusual", "weird", "wonderful",
)  # fmt: skip

TEMPLATES = (
    "{name} {past} the {adj} {noun} {prep} {place}.",
    "The {adj} {noun} {past} a {noun2} {time}.",
    "{plural} {intrans} {prep} {place}.",
    "Did {name} {base} the {adj} {noun} {time}?",
    "Please {base} the {noun} and {base2} the {adj} {noun2}.",
    "{name} is {ing} the {adj} {noun} {prep} {place}.",
    "What a {feeling} {noun} that was!",
    "Why would {name} {base} my {adj} {noun} {time}?",
    "We {past} {num} {adj} {plural} {prep} {place}.",
    "{name} and {name2} {adv} {past} the {noun}.",
    "I think the {noun} is {prep} {place}, but {name} {past} it {time}.",
    "My {noun}, my {noun2} and my {noun3} are all {prep} {place}.",
    "Maybe the {adj} {plural} {intrans} {prep} {place}.",
    "You should {adv} {base} the {noun} {time}.",
    "The {plural} {intrans}, and {name} {adv} {past} the {adj} {noun}.",
    "How many {plural} did {name} {base} {time}?",
    "There is a {adj} {noun} {prep} {place}.",
    "It was a {feeling} {noun}, {name}!",
)  # fmt: skip

NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence: a template filled with words drawn from `rng`."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    fields = {
        "name": pick(NAMES), "name2": pick(NAMES), "adj": pick(ADJECTIVES),
        "noun": pick(NOUNS), "noun2": pick(NOUNS), "noun3": pick(NOUNS),
        "plural": pick(PLURALS), "past": pick(VERBS_PAST), "base": pick(VERBS_BASE),
        "base2": pick(VERBS_BASE), "ing": pick(VERBS_ING), "intrans": pick(INTRANSITIVE),
        "prep": pick(PREPOSITIONS), "place": pick(PLACES), "time": pick(TIMES),
        "adv": pick(ADVERBS), "feeling": pick(FEELINGS), "num": pick(NUMBERS),
    }  # fmt: skip
    text = template.format(**fields)
    return text[0].upper() + text[1:]


def sentences(seed: int, count: int) -> list[str]:
    """`count` distinct sentences, deterministic from `seed`: sentence i is the same whatever
    `count` is (a corpus grown later keeps its existing sentences)."""
    rng = np.random.default_rng([seed, 0x5E7])
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        text = make_sentence(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def vocabulary() -> set[str]:
    """Every word the grammar can produce, lower case (for the dictionary-coverage test)."""
    groups = (NAMES, ADJECTIVES, NOUNS, PLURALS, VERBS_PAST, VERBS_BASE, VERBS_ING, INTRANSITIVE,
              PREPOSITIONS, PLACES, TIMES, ADVERBS, FEELINGS, NUMBERS, TEMPLATES)  # fmt: skip
    words: set[str] = set()
    for group in groups:
        for phrase in group:
            for word in phrase.replace("{", " {").split():
                if not word.startswith("{"):
                    words.add(word.strip(".,!?").lower())
                else:
                    tail = word.split("}", 1)[1].strip(".,!?")
                    if tail:
                        words.add(tail.lower())
    return {w for w in words if w}
