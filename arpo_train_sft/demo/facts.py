"""The demo's factual questions: a small fact table, the snippets search finds, and comparison questions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """One searchable fact: the query that finds it, the snippet it returns, the questions it answers."""

    topic: str
    name: str
    query: str
    snippet: str
    value: int | None  # what comparison questions compare: atomic number, length, year
    questions: tuple[tuple[str, str], ...]  # (question, answer)


_ELEMENTS = {
    "carbon": ("C", 6),
    "oxygen": ("O", 8),
    "sodium": ("Na", 11),
    "iron": ("Fe", 26),
    "copper": ("Cu", 29),
    "silver": ("Ag", 47),
    "gold": ("Au", 79),
    "lead": ("Pb", 82),
}
_CAPITALS = {
    "Australia": "Canberra",
    "Canada": "Ottawa",
    "Brazil": "Brasília",
    "Turkey": "Ankara",
    "Nigeria": "Abuja",
    "New Zealand": "Wellington",
    "Kenya": "Nairobi",
    "Pakistan": "Islamabad",
}
_RIVERS = {
    "Nile": (6650, "the Mediterranean Sea"),
    "Yangtze": (6300, "the East China Sea"),
    "Mekong": (4900, "the South China Sea"),
    "Volga": (3530, "the Caspian Sea"),
    "Danube": (2850, "the Black Sea"),
    "Rhine": (1230, "the North Sea"),
}
_INVENTIONS = {
    "the printing press": ("Johannes Gutenberg", 1440),
    "the mercury thermometer": ("Daniel Fahrenheit", 1714),
    "the lightning rod": ("Benjamin Franklin", 1752),
    "the cotton gin": ("Eli Whitney", 1793),
    "dynamite": ("Alfred Nobel", 1867),
    "the telephone": ("Alexander Graham Bell", 1876),
    "the phonograph": ("Thomas Edison", 1877),
    "the World Wide Web": ("Tim Berners-Lee", 1989),
}
FACTS = (
    [
        Fact(
            "element",
            e,
            f"{e} chemical element",
            f"{e.capitalize()} is a chemical element with the symbol {s} and atomic number {z}.",
            z,
            ((f"What is the chemical symbol of {e}?", s), (f"What is the atomic number of {e}?", str(z))),
        )
        for e, (s, z) in _ELEMENTS.items()
    ]
    + [
        Fact(
            "capital",
            c,
            f"capital of {c}",
            f"{cap} is the capital city of {c}.",
            None,
            ((f"What is the capital of {c}?", cap), (f"{cap} is the capital of which country?", c)),
        )
        for c, cap in _CAPITALS.items()
    ]
    + [
        Fact(
            "river",
            r,
            f"{r} river",
            f"The {r} is a river about {km} km long that flows into {sea}.",
            km,
            (
                (f"About how long is the {r} river, in kilometres?", str(km)),
                (f"Into which body of water does the {r} flow?", sea.removeprefix("the ")),
            ),
        )
        for r, (km, sea) in _RIVERS.items()
    ]
    + [
        Fact(
            "invention",
            t,
            f"who invented {t}",
            f"{who} is credited with inventing {t} in {y}.",
            y,
            ((f"Who is credited with inventing {t}?", who), (f"In what year was {t} invented?", str(y))),
        )
        for t, (who, y) in _INVENTIONS.items()
    ]
)
# The passages the demo's search results quote: `arpo-sft verify` searches the same corpus offline.
SEARCH_SNIPPETS = tuple(fact.snippet for fact in FACTS)
COMPARE = {
    "element": ("Which has the larger atomic number, {x} or {y}?", max, "atomic number"),
    "river": ("Which river is longer, the {x} or the {y}?", max, "length in km"),
    "invention": ("Which came first, {x} or {y}?", min, "year of invention"),
}
