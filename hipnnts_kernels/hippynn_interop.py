"""Weights to and from hippynn (PyPI ``hippynn`` 0.1.3): ``Hipnn`` / ``HipnnVec`` / ``HipnnQuad`` + ``HEnergy``.

The module trees match name for name; only the sensitivity parameters differ in layout
(hippynn keeps ``sensitivity.mu`` and ``sensitivity.sigma`` as (1, nu)). hippynn is imported
lazily: it is needed only by these two functions.
"""
from __future__ import annotations

from torch import nn

from .model import HipnnTS, InteractionLayer

_LMAX_OF_CLASS = {"Hipnn": 0, "HipnnVec": 1, "HipnnQuad": 2}
_SENSITIVITY_KEYS = ("sensitivity.mu", "sensitivity.sigma")


def _config_of(network: nn.Module) -> dict:
    from hippynn.layers.hiplayers import InverseSensitivityModule

    name = type(network).__name__
    if name not in _LMAX_OF_CLASS:
        raise TypeError(f"network must be a hippynn Hipnn, HipnnVec or HipnnQuad, got {name}")
    if network.resnet not in (True, False):
        raise ValueError(f"hippynn resnet={network.resnet!r} (a custom middle width) is not supported")
    if not isinstance(network.activation, nn.Softplus) or network.activation.beta != 1:
        raise ValueError(f"only the softplus (beta = 1) activation is supported, got {network.activation}")
    layers = network.interaction_layers
    if not all(isinstance(layer.sensitivity, InverseSensitivityModule) for layer in layers):
        raise ValueError("only hippynn's default 'inverse' sensitivity is supported")
    species = [int(z) for z in network.species_set.tolist() if z != 0]
    return dict(
        species=species, n_features=list(network.feature_sizes[1:]), n_sensitivities=network.n_sensitivities,
        dist_soft_min=network.dist_soft_min, dist_soft_max=network.dist_soft_max, cutoff=network.dist_hard_max,
        n_atom_layers=network.n_layers_per_block, lmax=_LMAX_OF_CLASS[name],
        cusp_reg=getattr(layers[0], "cusp_reg", 1e-6), resnet=bool(network.resnet),
    )


def from_hippynn(network: nn.Module, energy_head: nn.Module, backend: str = "auto") -> HipnnTS:
    """A :class:`HipnnTS` with the weights, hyperparameters and dtype of a hippynn network and ``HEnergy``.

    Args:
        network: hippynn ``Hipnn``, ``HipnnVec`` or ``HipnnQuad`` (species given, 'inverse' sensitivity).
        energy_head: hippynn ``HEnergy`` over all feature levels (``first_is_interacting=False``).
        backend: kernel backend of the new model.
    """
    if type(energy_head).__name__ != "HEnergy" or energy_head.first_is_interacting:
        raise TypeError("energy_head must be a hippynn HEnergy with first_is_interacting=False")
    if network.species_set is None:
        raise ValueError("the hippynn network must be built with possible_species")
    model = HipnnTS(**_config_of(network), backend=backend)
    state = {}
    for key, value in network.state_dict().items():
        if key.endswith("_extra_state"):
            continue
        if key.endswith(_SENSITIVITY_KEYS):
            key, value = key.replace("sensitivity.", ""), value.reshape(-1)
        state[key] = value
    for key, value in energy_head.state_dict().items():
        state[key.replace("layers.", "energy_heads.", 1)] = value
    dtype = next(network.parameters()).dtype
    model.to(dtype=dtype, device=next(network.parameters()).device)
    model.load_state_dict(state, strict=True)
    return model


def to_hippynn(model: HipnnTS) -> tuple[nn.Module, nn.Module]:
    """The hippynn (network, HEnergy) pair holding the weights of ``model``."""
    from hippynn.layers.targets import HEnergy
    from hippynn.networks.hipnn import Hipnn, HipnnQuad, HipnnVec

    cls = (Hipnn, HipnnVec, HipnnQuad)[model.lmax]
    hp = model.hparams
    network = cls(
        n_features=list(hp["n_features"]), n_sensitivities=hp["n_sensitivities"], dist_soft_min=hp["dist_soft_min"],
        dist_soft_max=hp["dist_soft_max"], dist_hard_max=hp["cutoff"], n_atom_layers=hp["n_atom_layers"],
        possible_species=[0, *hp["species"]], resnet=hp["resnet"],
        **({"cusp_reg": hp["cusp_reg"]} if model.lmax else {}),
    )
    head = HEnergy(list(model.feature_sizes))
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    network.to(dtype=dtype, device=device)
    head.to(dtype=dtype, device=device)
    net_state, head_state = network.state_dict(), {}
    for key, value in model.state_dict().items():
        if key.startswith("energy_heads."):
            head_state[key.replace("energy_heads.", "layers.", 1)] = value
        else:
            net_state.update([_hippynn_entry(key, value)])
    network.load_state_dict(net_state, strict=True)
    head.load_state_dict(head_state, strict=True)
    return network, head


def interaction_layer_to_hippynn(layer: InteractionLayer) -> nn.Module:
    """The hippynn ``InteractLayer`` / ``InteractLayerVec`` / ``InteractLayerQuad`` holding the
    weights of one :class:`~hipnnts_kernels.model.InteractionLayer`. The sensitivity centres are
    the layer's own; hippynn's constructor arguments only initialise them (overwritten here)."""
    from hippynn.layers.hiplayers import InteractLayer, InteractLayerQuad, InteractLayerVec, InverseSensitivityModule

    mu = layer.mu.detach()
    args = (layer.n_in, layer.n_out, layer.n_sensitivities, float(mu.min()), float(mu.max()), layer.cutoff,
            InverseSensitivityModule)
    hippynn_layer = (InteractLayer(*args) if layer.lmax == 0 else
                     (InteractLayerVec, InteractLayerQuad)[layer.lmax - 1](*args, layer.cusp_reg))
    hippynn_layer.to(dtype=mu.dtype, device=mu.device)
    state = dict(_hippynn_entry(key, value) for key, value in layer.state_dict().items())
    hippynn_layer.load_state_dict({**hippynn_layer.state_dict(), **state}, strict=True)
    return hippynn_layer


def _hippynn_entry(key: str, value):
    """Our state-dict entry under hippynn's name and layout (mu, sigma -> sensitivity.*, (1, nu))."""
    if key == "mu" or key == "sigma" or key.endswith((".mu", ".sigma")):
        stem, _, name = key.rpartition(".")
        return f"{stem + '.' if stem else ''}sensitivity.{name}", value.reshape(1, -1)
    return key, value
