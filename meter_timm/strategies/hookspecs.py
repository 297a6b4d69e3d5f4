"""Hook specifications of meter-timm plugins (the plugin author's reference).

A plugin is any module or object with functions decorated by ``meter_timm.strategies.hookimpl``
whose names match the specifications below. Third-party packages expose their plugin through
the entry-point group ``meter_timm`` (one group for every plugin kind)::

    # pyproject.toml of the plugin package
    [project.entry-points.meter_timm]
    quantile = "meter_timm_quantile"

meter-timm's own built-in strategies are registered through these very hooks
(``meter_timm.strategies.builtin``), so a plugin can do everything a built-in does.
Auto-loading of entry points is switched off by setting ``METER_TIMM_DISABLE_PLUGIN_AUTOLOAD``.
"""

from pluggy import HookspecMarker

hookspec = HookspecMarker("meter_timm")


@hookspec
def meter_timm_register_strategies(register):
    """Register depth-bin assignment strategies.

    Call ``register(cls)`` once per strategy class. ``cls`` must subclass
    ``meter_timm.strategies.DepthBinStrategy`` and set the class attributes

    * ``name``: the name users select it by (``strategy="quantile"`` in a layer dict, or
      ``create_strategy("quantile", ...)``); it must be unique over all installed plugins: a
      name already taken is ignored, with a warning that names both plugins (the first
      registered, meter_timm's own built-ins included, keeps it);
    * ``description``: one line, shown by ``meter-timm strategies``;
    * ``learnable``: True when ``observe_depth()``/``observe()``/``refit()`` change the
      edges or the assignment (then ``state_dict()`` must hold what was learned, as tensors,
      so that a checkpoint resumes with the same bins). A learnable strategy that stops
      learning overrides the ``frozen`` property to say so: the loss then keeps its edges and
      assignment between steps, as for a fixed strategy.

    The class is instantiated per layer as ``cls(num_units, num_bins, min_depth, max_depth,
    **params)`` where ``params`` are the user's keyword parameters; reject unknown ones with a
    TypeError (the base class does this for you). Every object is checked after construction:
    ``edges()`` must return ``num_bins + 1`` strictly increasing finite values and
    ``assignment()`` ``num_units`` integers in ``[0, num_bins)`` using every bin when
    ``num_units >= num_bins``; otherwise a ValueError names the strategy and the problem.
    """
