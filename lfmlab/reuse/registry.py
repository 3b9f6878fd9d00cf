"""The model-reuse area's registry (notebook 05): each method with its paper and entry point. The
merging benchmark's eight merges (:data:`lfmlab.reuse.merging.METHODS`) are rows here too."""
from __future__ import annotations

from lfmlab.core.registry import MethodInfo
from lfmlab.core.state import Merged
from lfmlab.reuse import (
    adamerging,
    batchensemble,
    connectivity,
    dare,
    ensemble,
    fisher,
    interpolate,
    lawa,
    lorahub,
    model_stock,
    otfusion,
    rebasin,
    regmean,
    slerp,
    soups,
    task_arithmetic,
    ties,
    tsv,
    zipit,
)

__all__ = ["METHODS"]

_NB = "05_model_reuse"


def _row(name, summary, paper, section, run, result=Merged, merge=None):
    return MethodInfo(name, summary, paper, section, run, result, _NB, None, {"merge": merge})


METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    _row("ensemble", "average the members' logits", "(eq. 8)", "§4.1", ensemble.ensemble, ensemble.LogitEnsemble),
    _row("BatchEnsemble", "members share W and differ by rank-one factors", "Wen et al. 2020", "§4.1",
         batchensemble.train_batchensemble, batchensemble.Trained),
    _row("average", "the uniform average of fine-tuned weights", "(eq. 10)", "§4.2.1", interpolate.uniform_average,
         merge="average"),
    _row("linear interpolation", "(1 − t) W_a + t W_b", "(eq. 9)", "§4.2.1", interpolate.lerp, dict),
    _row("model soup (greedy)", "add ingredients while held-out accuracy rises", "Wortsman et al. 2022", "§4.2.1",
         soups.greedy_soup),
    _row("SLERP", "walk the arc between two models' tensors instead of the chord", "Shoemake 1985; mergekit",
         "§4.2.1", slerp.slerp),
    _row("model stock", "pull the average of a few fine-tunes towards the pretrained weights by their angle",
         "Jang et al. 2024", "§4.2.1", model_stock.model_stock),
    _row("LAWA", "average the last k checkpoints of one run", "Kaddour 2022", "§4.2.1", lawa.lawa),
    _row("task arithmetic", "pretrained weights plus λ times the sum of task vectors", "Ilharco et al. 2023", "§4.2.2",
         task_arithmetic.task_arithmetic, merge="task arithmetic"),
    _row("TIES", "trim task vectors, elect signs, average the agreeing parts", "Yadav et al. 2023", "§4.2.2",
         ties.ties_merging, merge="TIES"),
    _row("DARE", "drop task-vector entries at random and rescale the rest", "Yu et al. 2024", "§4.2.2", dare.dare,
         merge="DARE"),
    _row("TSV-M", "per layer: compress each task matrix to its top singular vectors, decorrelate, sum",
         "Gargiulo et al. 2025", "§4.2.2", tsv.tsv_merge, merge="TSV-M"),
    _row("Fisher", "weights averaged in proportion to their Fisher information", "Matena and Raffel 2022",
         "§4.2.3", fisher.fisher_merging, merge="Fisher"),
    _row("RegMean", "each linear layer solved for the merged model's least-squares fit to every model's outputs",
         "Jin et al. 2023", "§4.2.3", regmean.regmean, merge="RegMean"),
    _row("AdaMerging", "merge coefficients learned by entropy minimisation on unlabelled test inputs",
         "Yang et al. 2024", "§4.2.3", adamerging.adamerging, merge="AdaMerging"),
    _row("OT fusion", "transport B's units onto A's layer by layer (optimal transport), then average",
         "Singh and Jaggi 2020", "§4.2.3", otfusion.otfusion, otfusion.Fused),
    _row("mode connectivity", "the loss along a line and a trained Bézier curve between two models",
         "Garipov et al. 2018", "§4.2.4", connectivity.bezier_curve, connectivity.BezierCurve),
    _row("re-basin", "permute one model's hidden units to match the other's before merging",
         "Ainsworth et al. 2023", "§4.2.4", rebasin.weight_matching, rebasin.Rebasin),
    _row("ZipIt!", "merge two models by matching features, also within one model", "Stoica et al. 2024", "§4.2.4",
         zipit.zipit, zipit.Zipped),
    MethodInfo("LoraHub", "mix LoRA modules of other tasks with weights found by CMA-ES on a few examples",
               "Huang et al. 2024", "§4", lorahub.lorahub, lorahub.LoraHubResult, _NB, lorahub.LoraHubConfig,
               {"merge": None}),
]}
