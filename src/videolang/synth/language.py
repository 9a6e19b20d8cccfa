"""Language about the world: captions, questions, multiple choice and text-only tasks.

All text is generated from templates with synonyms, driven by an explicit numpy generator, so
it is deterministic by seed. Video captions and questions always name motions (retrieval and
QA need temporal reasoning); still-image captions never do (a single frame cannot show one).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .world import (
    ACTION_INDEX,
    ACTIONS,
    COLOUR_NAMES,
    SHAPES,
    SIZES,
    VERB_BY_KEY,
    VERB_KEYS,
    sample_actions,
    sample_scene,
    sequence_plausible,
    transition_allowed,
)

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
    "star": ("star", "six-pointed star"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
# Third-person present tense. Index 0 is the canonical phrase.
VERB_PHRASES: dict[str, tuple[str, ...]] = {
    "move-left": (
        "moves left",
        "moves to the left",
        "slides to the left",
        "drifts left",
        "travels left",
    ),
    "move-right": (
        "moves right",
        "moves to the right",
        "slides to the right",
        "drifts right",
        "travels right",
    ),
    "move-up": ("moves up", "rises", "slides upward", "drifts up", "goes up"),
    "move-down": ("moves down", "sinks", "slides downward", "drifts down", "goes down"),
    "grow": ("grows", "gets bigger", "expands", "grows larger", "swells"),
    "shrink": ("shrinks", "gets smaller", "contracts", "becomes smaller", "dwindles"),
    "rotate-cw": ("rotates clockwise", "spins clockwise", "turns clockwise"),
    "rotate-ccw": ("rotates counterclockwise", "spins anticlockwise", "turns counterclockwise"),
    "stay-still": ("stays still", "stays in place", "does not move", "rests", "remains motionless"),
}
CONNECTIVES: tuple[str, ...] = (", then ", ", and then ", ", after that ", ", next ")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")

# Words that name a motion: image captions must contain none of them. (Position words such as
# "left" may appear in still captions: "on the left" describes where, not how it moves.)
MOTION_WORDS: frozenset[str] = frozenset(
    {p.split()[0] for phrases in VERB_PHRASES.values() for p in phrases}
    | {
        "moving",
        "motion",
        "still",
        "motionless",
        "clockwise",
        "counterclockwise",
        "anticlockwise",
        "upward",
        "downward",
        "bigger",
        "smaller",
        "larger",
    }
)

# Open-ended QA: one-word answers, fixed vocabulary (independent of the sample).
ANSWER_TYPES: tuple[str, ...] = ("motion", "object", "color", "number")
ANSWER_VOCAB: tuple[str, ...] = tuple(
    sorted(
        {VERB_BY_KEY[v].answer for v in VERB_KEYS}
        | set(SHAPES)
        | set(COLOUR_NAMES)
        | set(NUMBER_WORDS)
    )
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def with_article(phrase: str) -> str:
    """'a red square', 'an orange star'."""
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def object_phrase(
    obj: dict[str, Any], rng: np.random.Generator | None = None, *, size: bool = False
) -> str:
    """'red square' (canonical) or a synonym variant such as 'little violet box'."""
    if rng is None:
        words = [COLOUR_WORDS[obj["colour"]][0], SHAPE_WORDS[obj["shape"]][0]]
        if size:
            words.insert(0, SIZE_WORDS[obj["size"]][0])
        return " ".join(words)
    words = [_pick(rng, COLOUR_WORDS[obj["colour"]]), _pick(rng, SHAPE_WORDS[obj["shape"]])]
    if size:
        words.insert(0, _pick(rng, SIZE_WORDS[obj["size"]]))
    return " ".join(words)


def verb_phrase(verb: str, rng: np.random.Generator | None = None) -> str:
    phrases = VERB_PHRASES[verb]
    return phrases[0] if rng is None else _pick(rng, phrases)


def event_caption(obj: dict[str, Any], verb: str) -> str:
    """Canonical caption of one event: 'the red square moves left'."""
    return f"the {object_phrase(obj)} {verb_phrase(verb)}"


def describe_sequence(
    steps: Sequence[tuple[dict[str, Any], str]], rng: np.random.Generator | None = None
) -> str:
    """One sentence for a sequence of (object, verb) steps, in temporal order.

    Without ``rng`` it is canonical ('the red square moves left, then the blue circle grows');
    with ``rng`` it picks synonyms, connectives and pronouns.
    """
    parts = []
    prev = None
    for k, (obj, verb) in enumerate(steps):
        if rng is None:
            subject = f"the {object_phrase(obj)}"
        elif prev is obj and rng.random() < 0.5:
            subject = "it"
        else:
            phrase = object_phrase(obj, rng)
            subject = with_article(phrase) if k == 0 and rng.random() < 0.5 else f"the {phrase}"
        parts.append(f"{subject} {verb_phrase(verb, rng)}")
        prev = obj
    if rng is None:
        return ", then ".join(parts)
    out = parts[0]
    for p in parts[1:]:
        out += _pick(rng, CONNECTIVES) + p
    return out


def _steps(spec: dict[str, Any], events: Sequence[dict[str, Any]] | None = None):
    objs = spec["objects"]
    return [(objs[e["object"]], e["verb"]) for e in (spec["events"] if events is None else events)]


def video_captions(spec: dict[str, Any], rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` distinct retrieval captions (MSR-VTT style): the canonical full description, then
    paraphrases of the full sequence or of a contiguous part of it (>= 2 events), sometimes
    introduced by the scene."""
    steps = _steps(spec)
    caps = [describe_sequence(steps)]
    attempts = 0
    while len(caps) < n and attempts < 50 * n:
        attempts += 1
        sub = steps
        if len(steps) > 2 and rng.random() < 0.5:
            length = int(rng.integers(2, len(steps)))
            start = int(rng.integers(0, len(steps) - length + 1))
            sub = steps[start : start + length]
        text = describe_sequence(sub, rng)
        if rng.random() < 0.3:
            names = [with_article(object_phrase(o, rng, size=True)) for o in spec["objects"]]
            scene = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            text = f"there is {scene}: {text}"
        if text not in caps:
            caps.append(text)
    k = 2
    while len(caps) < n:  # tiny vocabularies only: number the leftovers to stay distinct
        caps.append(f"{caps[0]} (version {k})")
        k += 1
    return caps


# ---------------------------------------------------------------------------------------------
# open-ended QA (TGIF FrameQA style: single-word answers)


def video_questions(
    spec: dict[str, Any], rng: np.random.Generator, n: int = 4
) -> list[dict[str, str]]:
    """Up to ``n`` unambiguous questions whose one-word answers need the video's motion."""
    objs, events = spec["objects"], spec["events"]
    cands: list[dict[str, str]] = []
    for oi, obj in enumerate(objs):
        mine = [e for e in events if e["object"] == oi]
        name = object_phrase(obj)
        if mine:
            cands.append(
                {
                    "question": f"what does the {name} do first?",
                    "answer": VERB_BY_KEY[mine[0]["verb"]].answer,
                    "answer_type": "motion",
                }
            )
        if len(mine) >= 2:
            cands.append(
                {
                    "question": f"what does the {name} do last?",
                    "answer": VERB_BY_KEY[mine[-1]["verb"]].answer,
                    "answer_type": "motion",
                }
            )
        # Back-to-back events with the same action look like one motion: count runs.
        moves = sum(
            1
            for k, e in enumerate(events)
            if e["object"] == oi
            and e["verb"] != "stay-still"
            and not (k > 0 and events[k - 1]["action"] == e["action"])
        )
        cands.append(
            {
                "question": f"how many times does the {name} move?",
                "answer": NUMBER_WORDS[moves],
                "answer_type": "number",
            }
        )
    # "Which shape stays still?" would be ambiguous: objects without events are still too.
    for verb in dict.fromkeys(e["verb"] for e in events if e["verb"] != "stay-still"):
        first = next(e for e in events if e["verb"] == verb)
        obj = objs[first["object"]]
        several = len({e["object"] for e in events if e["verb"] == verb}) > 1
        when = " first" if several else ""
        phrase = verb_phrase(verb)
        cands.append(
            {
                "question": f"which shape {phrase}{when}?",
                "answer": obj["shape"],
                "answer_type": "object",
            }
        )
        cands.append(
            {
                "question": f"what color is the shape that {phrase}{when}?",
                "answer": obj["colour"],
                "answer_type": "color",
            }
        )
    actions = [e["action"] for e in events]
    for k, e in enumerate(events[:-1]):
        if actions.count(e["action"]) == 1:
            nxt = events[k + 1]
            cands.append(
                {
                    "question": f"what does the {object_phrase(objs[nxt['object']])} do right after "
                    f"the {object_phrase(objs[e['object']])} {verb_phrase(e['verb'])}?",
                    "answer": VERB_BY_KEY[nxt["verb"]].answer,
                    "answer_type": "motion",
                }
            )
    order = rng.permutation(len(cands))[:n]
    return [cands[int(i)] for i in sorted(order.tolist())]


# ---------------------------------------------------------------------------------------------
# multiple choice


def _perturb(spec: dict[str, Any], rng: np.random.Generator, kind: str):
    """A wrong event list (objects, verbs) of the given kind, or None when not applicable."""
    objs = spec["objects"]
    # The scene's own object dicts: describe_sequence uses pronouns by object identity, and
    # copies here made every distractor pronoun-free, so longer than the true option.
    steps = [(objs[e["object"]], e["verb"]) for e in spec["events"]]
    n = len(steps)
    k = int(rng.integers(n))
    if kind == "flip-direction":
        movers = [i for i, (_, v) in enumerate(steps) if v != "stay-still"]
        if not movers:
            return None
        k = movers[int(rng.integers(len(movers)))]
        steps[k] = (steps[k][0], VERB_BY_KEY[steps[k][1]].opposite)
    elif kind == "swap-order":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if steps[i] != steps[j]]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        steps[i], steps[j] = steps[j], steps[i]
    elif kind == "other-object":
        present = {o["shape"] for o in objs}
        absent = [s for s in SHAPES if s not in present]
        # Another shape in the replaced object's colour: a random colour often repeated one
        # already in the scene, which the text alone gives away (colours are unique per video).
        obj = dict(steps[k][0])
        obj["shape"] = absent[int(rng.integers(len(absent)))]
        steps[k] = (obj, steps[k][1])
    elif kind == "other-motion":
        verb = steps[k][1]
        choices = [v for v in VERB_KEYS if v not in (verb, VERB_BY_KEY[verb].opposite)]
        if steps[k][0]["shape"] == "circle":
            choices = [v for v in choices if not v.startswith("rotate")]
        steps[k] = (steps[k][0], choices[int(rng.integers(len(choices)))])
    else:
        raise ValueError(kind)
    return steps


def _semantic(steps) -> tuple:
    return tuple((o["shape"], o["colour"], v) for o, v in steps)


def _grammatical(steps) -> bool:
    """Whether the event list is a possible action sequence of the world's grammar."""
    ids = [ACTION_INDEX.get((v, o["shape"])) for o, v in steps]
    return None not in ids and sequence_plausible(ids)


MC_KINDS: tuple[str, ...] = ("flip-direction", "swap-order", "other-object", "other-motion")


def multiple_choice(
    spec: dict[str, Any], rng: np.random.Generator, n_options: int = 5
) -> dict[str, Any]:
    """MSR-VTT MC style: ``n_options`` sentences, exactly one true of the video.

    Distractors change one thing: a motion's direction, the order of two events, the object
    or the motion; they are distinct from the truth and from each other as event lists, and
    they are grammatical action sequences whenever enough such distractors exist. (Without that
    rule most distractors contained a forbidden transition, so a text-only model that learned
    the grammar picked the true option 80 % of the time without looking at the video.)
    """
    truth = [(spec["objects"][e["object"]], e["verb"]) for e in spec["events"]]
    seen = {_semantic(truth)}
    wrong: list[tuple[str, Any]] = []
    ungrammatical: list[tuple[str, Any]] = []
    kinds = itertools.cycle(MC_KINDS)
    for _ in range(400):
        if len(wrong) == n_options - 1:
            break
        kind = next(kinds)
        steps = _perturb(spec, rng, kind)
        if steps is None or _semantic(steps) in seen:
            continue
        seen.add(_semantic(steps))
        (wrong if _grammatical(steps) else ungrammatical).append((kind, steps))
    wrong += ungrammatical[: n_options - 1 - len(wrong)]  # only when the grammar leaves too few
    if len(wrong) < n_options - 1:
        raise RuntimeError(f"{spec['id']}: cannot build {n_options - 1} distinct distractors")
    answer = int(rng.integers(n_options))
    options: list[str] = []
    option_kinds: list[str] = []
    wrong_iter = iter(wrong)
    for i in range(n_options):
        if i == answer:
            option_kinds.append("correct")
            options.append(describe_sequence(truth, rng))
        else:
            kind, steps = next(wrong_iter)
            option_kinds.append(kind)
            options.append(describe_sequence(steps, rng))
    return {"options": options, "answer": answer, "option_kinds": option_kinds}


def action_choice(
    spec: dict[str, Any], rng: np.random.Generator, n_options: int = 5
) -> dict[str, Any]:
    """TGIF-QA 'action' style: which motion does an object make first? 5 verb-phrase options."""
    objs, events = spec["objects"], spec["events"]
    actors = sorted({e["object"] for e in events})
    oi = actors[int(rng.integers(len(actors)))]
    first = next(e for e in events if e["object"] == oi)
    verbs = [v for v in VERB_KEYS if v != first["verb"]]
    distract = [verbs[int(i)] for i in rng.permutation(len(verbs))[: n_options - 1]]
    answer = int(rng.integers(n_options))
    options = [*distract[:answer], first["verb"], *distract[answer:]]
    return {
        "question": f"what does the {object_phrase(objs[oi])} do first?",
        "options": [verb_phrase(v) for v in options],
        "option_verbs": options,
        "answer": answer,
    }


# ---------------------------------------------------------------------------------------------
# still images


def _position_phrase(x: float, y: float) -> str:
    h = "left" if x < 0.38 else "right" if x > 0.62 else ""
    v = "top" if y < 0.38 else "bottom" if y > 0.62 else ""
    if h and v:
        return f"in the {v} {h}"
    if h:
        return f"on the {h}"
    if v:
        return f"at the {v}"
    return "in the center"


def apparent_size(radius: float) -> str:
    """Size word for a circumradius (fraction of the frame side) seen in one frame."""
    small, medium, large = SIZES["small"], SIZES["medium"], SIZES["large"]
    if radius < (small * medium) ** 0.5:
        return "small"
    if radius < (medium * large) ** 0.5:
        return "medium"
    return "large"


def image_captions(
    objects: Sequence[dict[str, Any]], states: np.ndarray, rng: np.random.Generator, n: int = 3
) -> list[str]:
    """COCO-style captions of one frame: objects, colours, apparent sizes, positions.

    ``states`` is (n_objects, 4) from :func:`frame_states`. No motion words: one frame
    cannot show a motion.
    """
    caps: list[str] = []
    attempts = 0
    while len(caps) < n and attempts < 30 * n:
        attempts += 1
        parts = []
        for obj, st in zip(objects, states, strict=True):
            size = apparent_size(obj["radius"] * math.exp(float(st[2])))
            desc = with_article(f"{_pick(rng, SIZE_WORDS[size])} {object_phrase(obj, rng)}")
            if len(caps) != 1 or rng.random() < 0.5:
                desc += " " + _position_phrase(float(st[0]), float(st[1]))
            parts.append(desc)
        order = [int(i) for i in rng.permutation(len(parts))]
        body = (
            parts[order[0]]
            if len(parts) == 1
            else (", ".join(parts[i] for i in order[:-1]) + " and " + parts[order[-1]])
        )
        tail = _pick(rng, (" on a gray background", "", " against a dark background", ""))
        lead = _pick(rng, ("", "a picture of ", "an image showing ", ""))
        text = f"{lead}{body}{tail}"
        if text not in caps:
            caps.append(text)
    return caps


# ---------------------------------------------------------------------------------------------
# text-only tasks


def random_sequence(rng: np.random.Generator, length: int):
    """A random scene and a grammatical action sequence on it: (objects, [(obj, verb)])."""
    objects = sample_scene(rng)
    by_shape = {o["shape"]: o for o in objects}
    actions = sample_actions(rng, list(by_shape), length)
    return objects, actions, [(by_shape[ACTIONS[a][1]], ACTIONS[a][0]) for a in actions]


def corpus_sentences(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` sentences about the world: grammatical action sequences, described."""
    out = []
    for _ in range(n):
        _, _, steps = random_sequence(rng, int(rng.integers(2, 7)))
        out.append(describe_sequence(steps, rng))
    return out


def action_sequence_line(actions: Sequence[int]) -> str:
    """TDK / Recipe1M action-corpus line: 'verb <v> noun <a> verb <v> noun'."""
    return " <a> ".join(f"{ACTIONS[a][0]} <v> {ACTIONS[a][1]}" for a in actions)


def plausibility_example(rng: np.random.Generator, label: int) -> tuple[str, int]:
    """SST-2-style sentence: is this sequence possible under the world's grammar?

    Positives are sampled from the grammar; negatives replace one action so that at least one
    transition is forbidden (weight 0), so the label is learnable from pairs of actions.
    """
    objects, actions = plausibility_actions(rng, label)
    by_shape = {o["shape"]: o for o in objects}
    steps = [(by_shape[ACTIONS[a][1]], ACTIONS[a][0]) for a in actions]
    return describe_sequence(steps, rng), label


def plausibility_actions(
    rng: np.random.Generator, label: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """The scene and action ids behind :func:`plausibility_example`."""
    while True:
        objects, actions, _ = random_sequence(rng, int(rng.integers(3, 6)))
        by_shape = {o["shape"]: o for o in objects}
        if label == 1:
            break
        in_scene = [i for i, (_, noun) in enumerate(ACTIONS) if noun in by_shape]
        k = int(rng.integers(len(actions)))
        bad = [
            a
            for a in in_scene
            if (k > 0 and not transition_allowed(actions[k - 1], a))
            or (k + 1 < len(actions) and not transition_allowed(a, actions[k + 1]))
        ]
        if bad:
            actions[k] = bad[int(rng.integers(len(bad)))]
            break
    return objects, actions


def entailment_example(rng: np.random.Generator, label: str) -> tuple[str, str, str]:
    """RTE-style pair: a described sequence and a claim about it (entailment/not_entailment).

    Claims are about what happened (object + motion) or the order of two events; wrong claims
    flip a direction, swap an order, change the colour or name an absent object.
    """
    while True:
        objects, _, steps = random_sequence(rng, int(rng.integers(2, 6)))
        premise = describe_sequence(steps, rng)
        facts = {(o["shape"], o["colour"], v) for o, v in steps}
        kind = int(rng.integers(2)) if len(steps) >= 2 else 0
        if kind == 0:  # did X do V?
            obj, verb = steps[int(rng.integers(len(steps)))]
            if label == "not_entailment":
                choice = int(rng.integers(3))
                obj = dict(obj)
                if choice == 0:
                    verb = VERB_BY_KEY[verb].opposite
                elif choice == 1:
                    obj["colour"] = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
                else:
                    absent = [s for s in SHAPES if s not in {o["shape"] for o in objects}]
                    obj["shape"] = absent[int(rng.integers(len(absent)))]
                if (obj["shape"], obj["colour"], verb) in facts:
                    continue
            hypothesis = f"the {object_phrase(obj, rng)} {verb_phrase(verb, rng)}"
        else:  # did X do V before Y did W?
            i, j = sorted(int(x) for x in rng.choice(len(steps), size=2, replace=False))
            a, b = steps[i], steps[j]
            if label == "not_entailment":
                a, b = b, a
            sem = [(o["shape"], o["colour"], v) for o, v in steps]
            sa = (a[0]["shape"], a[0]["colour"], a[1])
            sb = (b[0]["shape"], b[0]["colour"], b[1])
            true = any(
                sem[p] == sa and sem[q] == sb
                for p in range(len(sem))
                for q in range(p + 1, len(sem))
            )
            if true != (label == "entailment"):
                continue
            hypothesis = (
                f"the {object_phrase(a[0], rng)} {verb_phrase(a[1], rng)} before the "
                f"{object_phrase(b[0], rng)} {verb_phrase(b[1], rng)}"
            )
        return premise, hypothesis, label
