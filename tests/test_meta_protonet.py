"""ProtoNets, the nearest-centroid baseline, and the class-pool episode sampler."""
import lfmlab  # noqa: F401

# isort: split
import torch
from torch import nn

from lfmlab.data import digits as data
from lfmlab.meta import nets, pools, protonet


def test_prototypes_are_class_means_whatever_the_order():
    z = torch.tensor([[[0., 0.], [2., 0.], [0., 4.], [0., 6.]]])         # [1, 4, 2]
    y = torch.tensor([[1, 1, 0, 0]])
    c = protonet.prototypes(z, y, 2)
    assert torch.allclose(c, torch.tensor([[[0., 5.], [1., 0.]]]))


def test_logits_are_negative_squared_distances_and_centroids_classify_clean_clusters():
    centers = torch.eye(3)[:, None, None, :].expand(3, 1, 1, 3) * 10            # 3 far-apart "images"
    pool = (centers.reshape(3, 1, 1, 1, 3).expand(3, 6, 1, 1, 3)
            + 0.1 * torch.randn(3, 6, 1, 1, 3, generator=torch.Generator().manual_seed(0)))
    ep = pools.episodes(pool, 3, 2, 4, 5, torch.Generator().manual_seed(1))
    out = protonet.logits(nn.Flatten(), ep)
    assert out.shape == (5, 12, 3) and bool((out <= 0).all())
    z = ep.query_x.flatten(2)
    proto = ep.support_x.flatten(2).view(5, 3, 2, 3).mean(2)
    assert torch.allclose(out[0, 0], -((z[0, 0] - proto[0]) ** 2).sum(-1), atol=1e-4)
    assert float(protonet.nearest_centroid(ep).mean()) == 1.0


def test_pool_episodes_layout_and_disjoint_support_and_query():
    ids = torch.arange(6 * 9, dtype=torch.float32).view(6, 9, 1, 1, 1)       # every image a unique id
    ep = pools.episodes(ids, n_way=4, k_shot=2, n_query=3, n_episodes=50, generator=torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (50, 8, 1, 1, 1) and ep.query_x.shape == (50, 12, 1, 1, 1)
    assert ep.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for e in range(50):
        cls = ep.classes[e]
        assert len(set(cls.tolist())) == 4
        s, q = ep.support_x[e].flatten().long(), ep.query_x[e].flatten().long()
        assert not set(s.tolist()) & set(q.tolist())
        assert torch.equal(s // 9, cls.repeat_interleave(2)) and torch.equal(q // 9, cls.repeat_interleave(3))


def test_augmented_pool_holds_the_eight_symmetries_as_classes():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.val, data.META_TRAIN_CLASSES)
    assert pool.shape[:2] == (40, int(d.val.counts(10)[:5].min()))
    zeros = d.val.x[d.val.y == 0][: pool.shape[1]]
    assert torch.equal(pool[0], zeros)
    assert torch.equal(pool[5 * 1], torch.rot90(zeros, 1, dims=(-2, -1)))
    assert torch.equal(pool[5 * 4], torch.flip(zeros, dims=(-1,)))


def test_episodic_training_lowers_the_query_loss_and_copies_the_embedding():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.train, data.META_TRAIN_CLASSES, 2)
    emb = nets.embedding(4, seed=0, device="cpu")
    before = {k: v.clone() for k, v in emb.state_dict().items()}
    res = protonet.train(emb, pools.sampler(pool, 5, 2, 5), protonet.ProtoConfig(iterations=60, meta_batch=8),
                         generator=torch.Generator().manual_seed(0))
    assert float(res.losses[-15:].mean()) < 0.7 * float(res.losses[:15].mean())
    assert all(torch.equal(before[k], v) for k, v in emb.state_dict().items())
    test = data.episodes(d.test, data.META_TEST_CLASSES, 5, 1, 5, 40, generator=torch.Generator().manual_seed(0))
    acc = protonet.evaluate(res.model, test)
    assert acc.shape == (40,) and float(acc.mean()) > 0.4                    # well above chance (0.2)
