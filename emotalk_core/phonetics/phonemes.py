"""Phone symbols shared by the TTS, the teacher, forced alignment and the lip-closure metric.

Everything downstream speaks ARPAbet without stress digits (the phone set of the CMU dictionary
and of pocketsphinx's en-us model) plus "SIL" for pauses, so synthetic speech (espeak-ng
mnemonics) and real speech (pocketsphinx alignments) drive the same teacher and the same
metric. `ESPEAK_TO_ARPABET` is the one table that maps espeak-ng's English phoneme mnemonics;
a mnemonic that maps to two ARPAbet phones (r-coloured vowels, syllabic l) splits its interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from emotalk_core.config import PHONE_LABELS

SIL = "SIL"

ARPABET: frozenset[str] = frozenset(PHONE_LABELS) - {SIL}
VOWELS: frozenset[str] = frozenset(
    ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
)
# The lip-closure metric's classes (DESIGN.md section 8).
OPEN_VOWELS: frozenset[str] = frozenset(["AA", "AE", "AH", "AO", "AW", "AY"])
BILABIALS: frozenset[str] = frozenset(["P", "B", "M"])
STOPS: frozenset[str] = frozenset(["P", "B", "T", "D", "K", "G", "CH", "JH"])

# espeak-ng English mnemonics (stress marks stripped) -> ARPAbet. Collected from the phoneme
# events of every English voice over the CMU dictionary's words; `to_arpabet` also folds
# unlisted variants ("t#", "l/2") onto their base letter.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",),
    "m": ("M",), "n": ("N",), "N": ("NG",), "f": ("F",), "v": ("V",), "T": ("TH",),
    "D": ("DH",), "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "tS": ("CH",),
    "dZ": ("JH",), "h": ("HH",), "l": ("L",), "r": ("R",), "r-": ("R",), "w": ("W",),
    "j": ("Y",), "x": ("HH",), "?": ("T",), "t#": ("T",), "t[": ("T",), "t2": ("T",),
    "d#": ("D",), "n-": ("N",), "m-": ("M",), "l#": ("L",), "l-": ("L",), "w#": ("W",),
    "hw": ("W",), "C": ("HH",), "c": ("K",), "J": ("Y",),
    # vowels
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@-": ("AH",), "@#": ("AH",),
    "@L": ("AH", "L"), "3": ("ER",), "3:": ("ER",), "VR": ("ER",), "@r": ("ER",),
    "a": ("AE",), "aa": ("AE",), "a#": ("AH",), "a2": ("AE",), "A:": ("AA",),
    "A@": ("AA", "R"), "A~": ("AA",), "0": ("AA",), "0#": ("AA",), "V": ("AH",),
    "aI": ("AY",), "aI2": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"),
    "aU": ("AW",), "aU@": ("AW", "ER"), "E": ("EH",), "E2": ("EH",), "e": ("EY",),
    "e@": ("EH", "R"), "eI": ("EY",), "I": ("IH",), "I2": ("IH",), "I#": ("IH",),
    "IR": ("IH", "R"), "i": ("IY",), "i:": ("IY",), "i@": ("IH", "R"), "i@3": ("IH", "R"),
    "O": ("AO",), "O:": ("AO",), "O2": ("AO",), "O~": ("AO",), "O@": ("AO", "R"),
    "o@": ("AO", "R"), "OI": ("OY",), "o": ("OW",), "oU": ("OW",), "@U": ("OW",),
    "oU#": ("OW",), "U": ("UH",), "U@": ("UH", "R"), "u:": ("UW",), "u": ("UW",),
}  # fmt: skip

# Shares of a two-phone mnemonic's interval: the vowel keeps most of it.
_SPLIT_SHARE = 0.6
_STRESS_MARKS = "',%=!"


@dataclass(frozen=True)
class TimedPhone:
    """One phone with its interval in seconds. `stress` is 2 for primary, 1 for secondary and
    0 otherwise; `reduced` marks espeak's schwa-like vowels (a teacher cue that the aligner
    cannot give: CMU dictionary AH covers both "cup" and "about")."""

    phone: str
    start: float
    end: float
    stress: int = 0
    reduced: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


def parse_mnemonic(name: str) -> tuple[str, int]:
    """An espeak phoneme event name -> (mnemonic without stress marks, stress level)."""
    stress = 2 if "'" in name else 1 if "," in name else 0
    return name.lstrip(_STRESS_MARKS), stress


def to_arpabet(mnemonic: str) -> tuple[str, ...]:
    """ARPAbet phones for an espeak mnemonic; () for modifiers that carry no time of their own
    (";" palatalisation), ("SIL",) for pauses. Unknown variants fall back to their stem."""
    if not mnemonic or mnemonic.startswith("_"):
        return (SIL,)
    if mnemonic in ESPEAK_TO_ARPABET:
        return ESPEAK_TO_ARPABET[mnemonic]
    stem = mnemonic.rstrip("#-[/2345;:~")
    if stem in ESPEAK_TO_ARPABET:
        return ESPEAK_TO_ARPABET[stem]
    if stem[:1] in ESPEAK_TO_ARPABET:
        return ESPEAK_TO_ARPABET[stem[:1]]
    return ()


def is_reduced(mnemonic: str) -> bool:
    """espeak's reduced vowels (schwas, unstressed "a#", "I2"): smaller mouth openings."""
    return mnemonic.startswith("@") or mnemonic in ("a#", "I2", "I#", "3", "i")


def expand(mnemonic: str, start: float, end: float, stress: int) -> list[TimedPhone]:
    """TimedPhones for one espeak phoneme interval, splitting two-phone mnemonics."""
    phones = to_arpabet(mnemonic)
    reduced = is_reduced(mnemonic)
    if len(phones) == 1:
        return [TimedPhone(phones[0], start, end, stress, reduced)]
    if not phones:
        return []
    cut = start + _SPLIT_SHARE * (end - start)
    return [
        TimedPhone(phones[0], start, cut, stress, reduced),
        TimedPhone(phones[1], cut, end, 0, False),
    ]


def strip_stress(phone: str) -> str:
    """ARPAbet with the CMU dictionary's stress digits removed ("AH0" -> "AH")."""
    return phone.rstrip("012")
