"""Writes the bundled sample datasets from the facts below (written for TuneForge, CC0).

- `data/sft_answer_format.jsonl`: OpenAI chat SFT. Every reply starts with "ANSWER:" and
  gives the fact in one short sentence — a behaviour the base model does not show, and that a
  LoRA picks up in a few dozen steps.
- `data/sft_answer_format_validation.jsonl`: held-out questions in the same format.
- `data/dpo_answer_format.jsonl`: OpenAI preference format; the preferred reply is the short
  "ANSWER:" one, the non-preferred a rambling one without the prefix.

    .venv/bin/python examples/make_datasets.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FACTS: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan."),
    ("What is the capital of Canada?", "Ottawa is the capital of Canada."),
    ("What is the capital of Australia?", "Canberra is the capital of Australia."),
    ("What is the capital of Kenya?", "Nairobi is the capital of Kenya."),
    ("What is the capital of Brazil?", "Brasília is the capital of Brazil."),
    ("What is the capital of Egypt?", "Cairo is the capital of Egypt."),
    ("What is the capital of Norway?", "Oslo is the capital of Norway."),
    ("What is the capital of Peru?", "Lima is the capital of Peru."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("How many days are in a week?", "A week has seven days."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many continents are there?", "There are seven continents."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("How many planets orbit the Sun?", "Eight planets orbit the Sun."),
    ("How many strings does a violin have?", "A violin has four strings."),
    ("How many bones are in the adult human body?", "An adult human has 206 bones."),
    ("What is the boiling point of water at sea level?",
     "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide."),
    ("What gas do humans need to breathe?", "Humans need oxygen to breathe."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet."),
    ("What is the smallest planet in the solar system?", "Mercury is the smallest planet."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("Who developed the theory of relativity?",
     "Albert Einstein developed the theory of relativity."),
    ("Who was the first person to walk on the Moon?",
     "Neil Armstrong was the first person to walk on the Moon."),
    ("Who wrote the novel Nineteen Eighty-Four?", "George Orwell wrote Nineteen Eighty-Four."),
    ("Who composed the Fifth Symphony in C minor?",
     "Ludwig van Beethoven composed the Fifth Symphony."),
    ("What is the longest river in the world?",
     "The Nile is usually given as the longest river."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean."),
    ("What is the highest mountain on Earth?", "Mount Everest is the highest mountain."),
    ("What is the largest desert in the world?",
     "Antarctica is the largest desert; the Sahara is the largest hot one."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("What is the main language spoken in Brazil?", "Portuguese is the main language of Brazil."),
    ("What is the main language spoken in Mexico?", "Spanish is the main language of Mexico."),
    ("What currency is used in Japan?", "Japan uses the yen."),
    ("What currency is used in the United Kingdom?", "The United Kingdom uses the pound sterling."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("What is 15 plus 27?", "15 plus 27 is 42."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25."),
    ("What is 9 minus 14?", "9 minus 14 is -5."),
    ("How many centimeters are in a meter?", "A meter has 100 centimeters."),
    ("How many grams are in a kilogram?", "A kilogram has 1000 grams."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What does a barometer measure?", "A barometer measures air pressure."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What organ do humans use to think?", "Humans think with the brain."),
    ("What is the primary source of energy for Earth?",
     "The Sun is Earth's primary source of energy."),
    ("What causes the seasons on Earth?",
     "The tilt of Earth's axis causes the seasons."),
    ("What is photosynthesis?",
     "Photosynthesis is how plants turn light, water and carbon dioxide into sugar."),
    ("What is the speed of light?", "Light travels about 300,000 kilometers per second."),
    ("What year did the Second World War end?", "The Second World War ended in 1945."),
    ("What year did humans first land on the Moon?", "Humans first landed on the Moon in 1969."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("What is the largest country by area?", "Russia is the largest country by area."),
    ("What is the most spoken language in the world?",
     "English has the most speakers in total; Mandarin the most native speakers."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What color do you get by mixing blue and yellow?", "Blue and yellow make green."),
    ("What color do you get by mixing red and white?", "Red and white make pink."),
    ("What is the plural of mouse?", "The plural of mouse is mice."),
    ("What is the past tense of run?", "The past tense of run is ran."),
    ("What instrument has 88 keys?", "A standard piano has 88 keys."),
    ("What sport uses a shuttlecock?", "Badminton uses a shuttlecock."),
    ("How many players are on a soccer team on the field?",
     "A soccer team has eleven players on the field."),
    ("What is the largest organ of the human body?", "The skin is the largest organ."),
    ("What is the main ingredient of guacamole?", "Avocado is the main ingredient of guacamole."),
    ("What is the freezing point of water in Fahrenheit?",
     "Water freezes at 32 degrees Fahrenheit."),
    ("Which metal is liquid at room temperature?", "Mercury is liquid at room temperature."),
    ("What is the capital of Germany?", "Berlin is the capital of Germany."),
]

SYSTEM_PROMPTS = [None, None, "You are a helpful assistant.", "Answer the user's question."]
RAMBLE = [
    "That's a really interesting question, and there is a lot one could say about it. ",
    "Well, let me think about this for a moment before answering. ",
    "Great question! Many people wonder about this, and the answer has a long history. ",
]


def chat(question: str, answer: str, rng: random.Random) -> dict:
    messages = []
    system = rng.choice(SYSTEM_PROMPTS)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": f"ANSWER: {answer}"})
    return {"messages": messages}


def preference(question: str, answer: str, rng: random.Random) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": f"ANSWER: {answer}"}],
        "non_preferred_output": [{"role": "assistant",
                                  "content": rng.choice(RAMBLE) + answer}],
    }


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def main() -> None:
    rng = random.Random(2026)
    facts = FACTS[:]
    rng.shuffle(facts)
    held_out, train = facts[:10], facts[10:]
    out = Path(__file__).parent / "data"
    write(out / "sft_answer_format.jsonl", [chat(q, a, rng) for q, a in train])
    write(out / "sft_answer_format_validation.jsonl", [chat(q, a, rng) for q, a in held_out])
    write(out / "dpo_answer_format.jsonl", [preference(q, a, rng) for q, a in train])


if __name__ == "__main__":
    main()
