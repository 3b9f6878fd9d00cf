"""The meta-learning area's registry (notebook 06): each method with its paper, config and entry point."""
from __future__ import annotations

from lfmlab.core.registry import MethodInfo
from lfmlab.meta import anil, bidf_mkd, dfml, icl, maml, mtl, protonet, purer, task_embedding

__all__ = ["METHODS"]

_NB = "06_meta_learning"

METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    MethodInfo("MAML", "learn an initialisation that adapts to a new task in a few gradient steps",
               "Finn et al. 2017", "§5.1", maml.meta_train, maml.MetaResult, _NB, maml.MAMLConfig,
               {"algorithm": "maml"}),
    MethodInfo("FOMAML", "MAML without second-order terms", "Finn et al. 2017", "§5.1", maml.meta_train,
               maml.MetaResult, _NB, maml.MAMLConfig, {"algorithm": "fomaml"}),
    MethodInfo("Reptile", "move the initialisation towards each task's adapted weights", "Nichol et al. 2018",
               "§5.1", maml.meta_train, maml.MetaResult, _NB, maml.MAMLConfig, {"algorithm": "reptile"}),
    MethodInfo("in-context learning", "a transformer meta-trained on (x, y) sequences learns a new task in its context",
               "Garg et al. 2022", "§5.1", icl.meta_train, icl.ICLResult, _NB, icl.ICLConfig),
    MethodInfo("ANIL", "MAML that adapts the head only", "Raghu et al. 2020", "§5.1", anil.meta_train,
               maml.MetaResult, _NB, maml.MAMLConfig),
    MethodInfo("MTL", "transfer a pretrained network; meta-learn per-channel scaling and shifting of its weights",
               "Sun et al. 2019", "§5.1", mtl.mtl, mtl.MTLResult, _NB, mtl.MTLConfig),
    MethodInfo("ProtoNet", "classify by the nearest class mean in a learned embedding", "Snell et al. 2017", "§5.1",
               protonet.train, protonet.ProtoResult, _NB, protonet.ProtoConfig),
    MethodInfo("DFML (inversion)", "meta-train on images inverted from a zoo of trained models",
               "Hu et al. 2023 (baseline)",
               "§5.2", dfml.meta_train, maml.MetaResult, _NB, maml.MAMLConfig),
    MethodInfo("PURER", "episodes from inverted data, made harder as meta-training goes on", "Hu et al. 2023",
               "§5.2", purer.purer, purer.PURERResult, _NB, purer.PURERConfig),
    MethodInfo("Task-embedding network", "fit one network that maps a learned embedding of each zoo model "
               "to its weights (eqs. 13-14); read the meta-initialisation at the mean embedding",
               "Wang et al. 2022", "§5.2", task_embedding.fit, task_embedding.TENResult, _NB,
               task_embedding.TENConfig),
    MethodInfo("BiDf-MKD", "distil black-box zoo models into the meta-model with zero-order inversion",
               "Hu et al. 2023", "§5.2", bidf_mkd.bidf_mkd, bidf_mkd.BiDfMKDResult, _NB, bidf_mkd.BiDfMKDConfig),
]}
