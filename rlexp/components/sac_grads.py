"""SAC's gradients for MLPs of Linear and ReLU layers, written out instead of recorded by autograd.

On CPU a SAC gradient step at batch 256 is mostly matrix multiplies (about 80% of its time under
torch.profiler); most of the rest is autograd recording a graph and walking it back. For the plain MLPs
SB3 builds (Sequentials of Linear and ReLU), the backward pass is a short fixed list of the same kernels
autograd would call: per Linear `grad.t() @ x` for the weight, `grad.sum(0)` for the bias and `grad @ W`
for its input; per ReLU `threshold_backward` on its output. Running them directly under `no_grad` skips
the graph, and skips the one product autograd cannot: the critics' input gradient for the observation
columns, which the actor loss never reads.

The critic loss's gradients are SB3's bitwise (the same aten calls in the same order, `mse_loss_backward`
included). The actor's go through the squashed Gaussian, whose log-prob autograd differentiates term by
term, including two that cancel analytically (the Gaussian's quadratic term does not depend on the mean or
the scale once the sample is reparametrised); here they are left out, so the actor's gradients equal SB3's
within float tolerance, not bitwise. Where the policy's std is tiny (log-std near its clamp at -20) autograd's
gradient at the mean is mostly the rounding of those two terms (each ~noise/std, exactly opposite on paper);
the closed form here is the exact derivative there, and so differs from SB3's by more than float tolerance.
"""

from __future__ import annotations

import torch as th
from torch.nn import functional as F  # noqa: N812 - as SB3 writes it

Plan = list[th.nn.Linear | None]  # None: a ReLU


def mlp_plan(net: th.nn.Module) -> Plan | None:
    """The layers of a Sequential of Linear and ReLU (each ReLU right after a Linear, as SB3's create_mlp
    builds them), or None where anything else is in it: those nets keep autograd."""
    if type(net) is not th.nn.Sequential:
        return None
    plan: Plan = []
    for layer in net:
        if type(layer) is th.nn.Linear:
            plan.append(layer)
        elif type(layer) is th.nn.ReLU and plan and plan[-1] is not None:
            plan.append(None)
        else:
            return None
    return plan


def forward(plan: Plan, x: th.Tensor, tape: list[th.Tensor]) -> th.Tensor:
    """The MLP's output; appends what its backward reads (each Linear's input, each ReLU's output) to tape.
    Call under no_grad. Same kernels as `_mlp` in fast_sac, so the same values bitwise."""
    for layer in plan:
        if layer is None:
            x = th.relu_(x)  # in place on the Linear's fresh output
            tape.append(x)
        else:
            tape.append(x)
            x = F.linear(x, layer.weight, layer.bias)
    return x


def backward(plan: Plan, tape: list[th.Tensor], grad: th.Tensor, weights: bool = True,
             input_cols: slice | None = None) -> th.Tensor | None:
    """Walks the plan back from `grad` (the loss's gradient at the MLP's output), popping tape. With
    `weights`, sets each layer's `.grad` (as a fresh tensor: the optimizer's zero_grad set them to None).
    Returns the gradient at the MLP's input, for the columns `input_cols` only; None when input_cols is None."""
    for i in range(len(plan) - 1, -1, -1):
        layer = plan[i]
        saved = tape.pop()
        if layer is None:
            grad = th.ops.aten.threshold_backward(grad, saved, 0)
            continue
        if weights:
            layer.weight.grad = grad.t().mm(saved)
            if layer.bias is not None:
                layer.bias.grad = grad.sum(0)
        if i > 0:
            grad = grad.mm(layer.weight)
        elif input_cols is not None:
            return grad.mm(layer.weight[:, input_cols])
    return None


def mse_grad(q: th.Tensor, target: th.Tensor, scale: float) -> th.Tensor:
    """d(scale * mse_loss(q, target)) / dq, as autograd computes it (aten's own backward kernel)."""
    grad = th.full((), scale, dtype=q.dtype, device=q.device)  # a fill, not a host copy (no sync on CUDA)
    return th.ops.aten.mse_loss_backward(grad, q, target, 1)


def squashed_gaussian_backward(grad_actions: th.Tensor, grad_log_prob: th.Tensor | float, actions: th.Tensor,
                               noise: th.Tensor, std: th.Tensor, log_std_raw: th.Tensor, log_std_min: float,
                               log_std_max: float, epsilon: float) -> tuple[th.Tensor, th.Tensor]:
    """Gradients at the actor's mean and unclamped log-std of a loss with `grad_actions` at the squashed sample
    a = tanh(mean + noise * std) and `grad_log_prob` at its log-prob (SB3's Normal log-prob summed over the
    action's dimensions minus sum log(1 - a^2 + epsilon)), with std = exp(clamp(log_std_raw)).

    d log_prob / d a = 2a / (1 - a^2 + epsilon) through the tanh correction; the Gaussian's own terms give
    -1 per dimension at log_std and nothing at the mean (the quadratic term is noise^2 / 2 whatever the mean
    and scale)."""
    one_minus_a2 = 1 - actions * actions
    grad_pre = (grad_actions + grad_log_prob * 2 * actions / (one_minus_a2 + epsilon)) * one_minus_a2
    grad_log_std = grad_pre * noise * std - grad_log_prob
    inside = (log_std_raw >= log_std_min) & (log_std_raw <= log_std_max)  # clamp's backward, bounds included
    return grad_pre, grad_log_std * inside
