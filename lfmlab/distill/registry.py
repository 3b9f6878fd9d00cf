"""The distillation area's registry (notebook 04): each method, its config, its paper; the
distillation panel reads it."""
from __future__ import annotations

from lfmlab.core.registry import MethodInfo
from lfmlab.distill import adaptive_di, adversarial, dafl, deepinversion, fast, features, gkd, kd, lm, nayer, zskd
from lfmlab.distill.common import DistillResult

__all__ = ["METHODS"]

_NB = "04_model_distillation"


def _row(name, summary, paper, run, config, section="§3.1", result=DistillResult, module=None):
    """``weights``/``terms``: a synthesiser's default loss weights and the terms it can use (the panel's sliders)."""
    extra = {"weights": module.WEIGHTS, "terms": module.TERMS} if module is not None else {}
    return MethodInfo(name, summary, paper, section, run, result, _NB, config, extra)


METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    _row("KD on real data", "match the teacher's softened logits on the training images", "Hinton et al. 2015",
         kd.kd_real, kd.KDConfig, "§3"),
    _row("FitNets hint", "KD plus a hint: the student's middle features, regressed, match the teacher's",
         "Romero et al. 2015", features.feature_kd, features.FeatureKDConfig, "§3"),
    _row("RKD", "KD plus the teacher's distances and angles between the examples of a batch",
         "Park et al. 2019", features.feature_kd, features.FeatureKDConfig, "§3"),
    _row("KD on Gaussian noise", "the same on Gaussian noise: the floor every data-free method must beat",
         "(baseline)", kd.kd_noise, kd.KDConfig),
    _row("DeepDream prior (DI without BN)", "images the teacher labels, by gradient ascent on the class score",
         "Mordvintsev et al. 2015", deepinversion.deepdream, deepinversion.DIConfig, module=deepinversion),
    _row("DeepInversion", "images whose batch statistics match the teacher's BatchNorm statistics",
         "Yin et al. 2020", deepinversion.deepinversion, deepinversion.DIConfig, module=deepinversion),
    _row("Adaptive DeepInversion", "DeepInversion plus a term for where teacher and student disagree",
         "Yin et al. 2020", adaptive_di.adaptive_deepinversion, adaptive_di.ADIConfig),
    _row("ZSKD (data impressions)", "inputs fitted to Dirichlet soft targets of the teacher's class similarity",
         "Nayak et al. 2019", zskd.zskd, zskd.ZSKDConfig, module=zskd),
    _row("DAFL", "a generator trained so the teacher is confident, active and class-balanced",
         "Chen et al. 2019", dafl.dafl, dafl.DAFLConfig, "§3.2", module=dafl),
    _row("NAYER", "a generator fed the class names' text embeddings through a noisy layer re-drawn each round",
         "Tran et al. 2024", nayer.nayer, nayer.NAYERConfig, "§3.2", module=nayer),
    _row("ZSKT (KL)", "a generator that seeks teacher-student disagreement (KL), adversarially",
         "Micaelli and Storkey 2019", adversarial.zskt, adversarial.AdversarialConfig, "§3.2", module=adversarial),
    _row("DFAD (L1)", "the same with an L1 discrepancy", "Fang et al. 2019", adversarial.dfad,
         adversarial.AdversarialConfig, "§3.2", module=adversarial),
    _row("Fast (meta-learned generator)", "a meta-learned generator initialisation, a few steps per round",
         "Fang et al. 2022", fast.fast_dfkd, fast.FastConfig, "§3.2", module=fast),
    _row("LM distillation", "a small LM trained on text sampled from a black-box teacher LM", "(sequence-level KD)",
         lm.distill_lm, lm.LMDistillConfig, "§3", lm.LMDistillResult),
    _row("GKD", "token-level KD of an LM on a λ share of its own samples, with a generalised JSD (β)",
         "Agarwal et al. 2024", gkd.gkd, gkd.GKDConfig, "§3", gkd.GKDResult),
]}
