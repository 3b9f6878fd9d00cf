"""The distillation panel, headless: demo runs every callback; bad input changes nothing."""
import lfmlab  # noqa: F401

# isort: split
import math

import numpy as np
import torch

from lfmlab import distill, zoo
from lfmlab.data import digits
from lfmlab.ui.distillation import RUNNERS, DistillPanel, class_grid


def test_class_grid_puts_images_in_their_label_column():
    images = torch.stack([torch.full((1, 8, 8), float(i) / 10) for i in range(3)])
    grid = class_grid(images, torch.tensor([2, 2, 7]), rows=2)
    assert grid.shape == (2 * 9 - 1, 10 * 9 - 1)
    assert np.allclose(grid[:8, 18:26], 0.0) and np.allclose(grid[9:, 18:26], 0.1)
    assert np.allclose(grid[:8, 63:71], 0.2) and np.isnan(grid[:8, :8]).all()


def test_panel_runs_methods_live_and_refuses_bad_input():
    d = digits.load("cpu")
    p = DistillPanel(zoo.load("digits-teacher").model.eval(), zoo.load("digits-student").model, (d.test.x, d.test.y))
    r = p.demo(method="DeepInversion", synth_steps=10, student_steps=20)
    assert r.method == "DeepInversion" and 0 <= r.accuracy <= 1 and r.n_images == 300
    assert len(p.curve_fig.data[0].x) == len(r.curve_steps) > 0
    z = np.array(p.grid_fig.data[0].z, dtype=float)
    assert z.shape == (4 * 9 - 1, 10 * 9 - 1) and not math.isnan(np.nanmax(z))
    # choosing a method loads its weights and greys out the terms it cannot use
    p.method = "DAFL"
    assert (p.entropy, p.activation, p.adversarial) == (5.0, 0.1, 0.0)
    assert p.sliders["adversarial"].disabled and not p.sliders["entropy"].disabled
    for bad, words in (({"bn": -1.0}, "must be >= 0"), ({"adversarial": 1.0}, "has no adversarial"),
                       ({"student_steps": 5}, "outside")):
        p.method, p.method = "ZSKT (KL)", "DAFL"                # reloads DAFL's own weights
        for k, v in bad.items():
            setattr(p, k, v)
        assert p.run() is None and not p.ok and words in p.message and p.result is r
    p.method = "ZSKT (KL)"
    p.adversarial = 0.0
    assert p.run() is None and "adversarial weight > 0" in p.message
    assert set(RUNNERS) >= {"KD on Gaussian noise", "ZSKD (data impressions)", "DFAD (L1)",
                            "Fast (meta-learned generator)"}
    assert set(RUNNERS) <= set(distill.METHODS)          # the panel reads the area's registry
