"""Looking inside a Conv2Former: effective receptive fields and the learned depthwise kernels (``c2f-inspect``).

    from c2f_numpy import create_model
    from c2f_numpy.analysis import area_ratios, effective_receptive_field, learned_kernels
    m = create_model("n", kernel_size=11, layer_scale_init_value=1.0)
    erf = effective_receptive_field(m, 8, stage=3, size=224)   # 8 noise images; or an (N, C, H, W) array
    area_ratios(erf.map)                                       # RepLKNet's t at 20%, 50%, 99%
    learned_kernels(m).stage_mean_abs                          # (k, k) mean |w| per stage

:mod:`.erf` (Luo et al. 2016's map, RepLKNet's summary numbers, the heat map), :mod:`.kernels` (the ConvMod
depthwise kernels), :mod:`.sources` (models and images for the CLI), :mod:`.cli` (``c2f-inspect``).
The definitions and an example: docs/analysis.md.
"""

from .erf import (
    LOG_PEAK,
    SHARES,
    ERFError,
    ERFResult,
    area_ratios,
    centre_gradient,
    centre_of_mass,
    effective_receptive_field,
    erf_figure,
    erf_summary,
    feature_shape,
    log_score,
    noise_images,
    ratio_table,
)
from .kernels import LearnedKernels, kernel_figure, kernel_table, learned_kernels
from .sources import SourceError, infer_architecture, load_images, load_source

__all__ = [
    "LOG_PEAK",
    "SHARES",
    "ERFError",
    "ERFResult",
    "LearnedKernels",
    "SourceError",
    "area_ratios",
    "centre_gradient",
    "centre_of_mass",
    "effective_receptive_field",
    "erf_figure",
    "erf_summary",
    "feature_shape",
    "infer_architecture",
    "kernel_figure",
    "kernel_table",
    "learned_kernels",
    "load_images",
    "load_source",
    "log_score",
    "noise_images",
    "ratio_table",
]
