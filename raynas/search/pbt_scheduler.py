"""Ray's PBT and PB2, fed by raynas's random or grid searcher (imports Ray Tune; see raynas.search.pbt).

They override PBT's private ``_exploit``, so they live in :mod:`raynas._tune.schedulers`;
their names here are kept (schedulers saved by earlier versions refer to them here).
"""

from raynas._tune.schedulers import RaynasPB2, RaynasPBT

__all__ = ["RaynasPBT", "RaynasPB2"]
