"""The one primitive of the plugin's precision policies: a stage that runs in float32 inside an autocast region."""
import torch

#: The dtypes that autocast computes in (the stages kept in float32 upcast them).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def run_in_float32(fn, *tensors: torch.Tensor):
    """``fn(*tensors)`` with autocast off and float16/bfloat16 tensors upcast to float32 (others kept as they are).

    Without autocast and with float32/float64 inputs it is a plain call, so the float32 path is unchanged.
    """
    with torch.autocast(tensors[0].device.type, enabled=False):
        return fn(*(t.float() if t is not None and t.dtype in LOW_PRECISION else t for t in tensors))
