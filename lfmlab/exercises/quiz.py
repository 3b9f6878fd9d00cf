"""One "predict, then run" question per section notebook: the learner predicts, then runs the
cell below it, which measures the answer. Every option carries its explanation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    text: str
    correct: bool
    why: str


@dataclass(frozen=True)
class Quiz:
    section: str
    question: str
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        if sum(o.correct for o in self.options) != 1:
            raise ValueError(f"quiz {self.section}: exactly one option is right")


QUIZZES = {q.section: q for q in [
    Quiz("02", "You merge a trained LoRA into GPT-2's Conv1D weight and run the same inputs. "
               "Compared with the unmerged model, the outputs are…", (
        Option("identical up to float rounding", True,
               "x W₀ + x (α/r)(BA)ᵀ = x (W₀ + (α/r)(BA)ᵀ): merging moves the low-rank path into the "
               "weight, so inference costs nothing extra."),
        Option("slightly different: merging approximates the low-rank path", False,
               "Nothing is approximated: the merge is an exact matrix identity."),
        Option("different, because the merged weight loses the rank-r structure", False,
               "The sum is full rank, but the function is the same; the rank matters for training, "
               "not for the merged layer's outputs."),
    )),
    Quiz("03", "A kNN-LM with λ = 0 is asked a fact you have just added to its datastore. It answers…", (
        Option("as the bare LM does: the datastore is ignored", True,
               "p = λ p_kNN + (1 − λ) p_LM is p_LM at λ = 0: the neighbours are retrieved but weigh nothing."),
        Option("with the new fact, since retrieval finds it", False,
               "Retrieval finds it, but λ = 0 gives the neighbours no weight."),
        Option("with a mixture, half the datastore and half the LM", False, "That is λ = 0.5."),
    )),
    Quiz("04", "You raise the distillation temperature from T = 1 to T = 10 and drop the T² factor. "
               "The gradient reaching the student's logits…", (
        Option("shrinks about 70×; for large T it falls as 1/T²", True,
               "The softened targets differ less, and each logit is divided by T: for large T the "
               "gradient falls as 1/T². Hinton et al. multiply the loss by T² to undo exactly this."),
        Option("stays the same: temperature only changes the targets", False,
               "The temperature divides the logits, so it scales the gradient too."),
        Option("grows, because soft targets carry more information", False,
               "They carry more information per example (the dark knowledge), but the gradient shrinks."),
    )),
    Quiz("05", "You permute the hidden units of an MLP (rows of the first layer, columns of the next). "
               "Its outputs…", (
        Option("stay the same, up to float rounding", True,
               "The same units compute the same things in another order, and the next layer reads them "
               "in that order: this symmetry is why two trained networks must be aligned (Git Re-Basin) "
               "before their weights are averaged."),
        Option("stay the same only if the biases are left in place", False,
               "A bias belongs to its unit: it must move with the unit's row, or the outputs change."),
        Option("change completely, like a new random network", False,
               "Only if one layer is permuted without the matching change in the next."),
    )),
    Quiz("06", "On one task, compare MAML's exact meta-gradient with the first-order one (FOMAML: the "
               "inner gradient detached). They are…", (
        Option("different: the exact one carries the Hessian term through the inner step", True,
               "∇θ L(θ − α∇L_S(θ)) = (I − α ∇²L_S(θ)) ∇L(θ'); FOMAML drops the Hessian factor. For a "
               "linear model with squared error that factor is I − (2α/N) XᵀX, far from I."),
        Option("equal, because the model is linear", False,
               "A linear model's squared-error loss has a constant, non-zero Hessian."),
        Option("equal up to a scale factor", False, "The Hessian factor rotates the gradient, not just scales it."),
    )),
    Quiz("07", "After ROME's rank-one update, the layer gets a key k′ with k′ · C⁻¹k* = 0 (unlike the "
               "edited subject under the key covariance). Its output…", (
        Option("is exactly what it was before the edit", True,
               "ΔW = u Λᵀ with u ∝ C⁻¹k*, so k′ ΔW = (k′ · u) Λᵀ = 0: keys that C says are unlike k* "
               "are untouched; that is why C⁻¹ is there."),
        Option("moves towards v*, a little", False,
               "Only keys with a component along C⁻¹k* move; this one has none."),
        Option("moves to v*, like the edited key", False, "Only k (and keys like it) map to v*."),
    )),
]}


def quiz(section: str) -> Quiz:
    if section not in QUIZZES:
        raise KeyError(f"no quiz for section {section!r}; there is one for {', '.join(QUIZZES)}")
    return QUIZZES[section]
