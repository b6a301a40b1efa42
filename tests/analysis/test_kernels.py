"""The learned depthwise kernels (c2f_numpy.analysis.kernels): what is read out, and the numbers made of it."""

from __future__ import annotations

import numpy as np

from c2f_numpy import Conv2Former
from c2f_numpy.analysis import kernel_figure, kernel_table, learned_kernels


def test_kernels_are_the_depthwise_weights_and_their_stage_means() -> None:
    model = Conv2Former((8, 16), (1, 2), 5, num_classes=3, head_dim=16)
    state = model.state_dict()
    for key in state:
        if key.endswith("attn.att.2.weight"):  # only the centre tap, |w| = 2 in stage 2's blocks
            w = np.zeros_like(state[key])
            w[:, :, 2, 2] = -2.0 if key.startswith("stages.1.") else 1.0
            state[key] = w
    state["stages.1.1.attn.att.2.weight"][3, 0, 0, 0] = 16.0  # one corner tap of one channel of one block
    model.load_state_dict(state)
    k = learned_kernels(model)
    assert list(k.blocks) == ["stages.0.0", "stages.1.0", "stages.1.1"]
    assert k.blocks["stages.1.1"].shape == (16, 5, 5) and k.kernel_size == 5
    np.testing.assert_array_equal(k.blocks["stages.1.1"], state["stages.1.1.attn.att.2.weight"][:, 0])
    want = np.zeros((5, 5))
    want[2, 2], want[0, 0] = 2.0, 16.0 / 16 / 2  # mean over 16 channels and 2 blocks
    np.testing.assert_allclose(k.stage_mean_abs[1], want)
    s = k.summary()
    assert s["stages"][0]["centre_3x3_share"] == 1.0
    np.testing.assert_allclose(s["stages"][1]["centre_3x3_share"], 2.0 / 2.5)
    assert s["stages"][1]["uniform_centre_3x3_share"] == 9 / 25
    assert "0.800" in kernel_table(k).splitlines()[2]
    fig = kernel_figure(k, channels=2)
    assert len(fig.axes) == 2 * 3 + 2  # and a colour bar per stage
