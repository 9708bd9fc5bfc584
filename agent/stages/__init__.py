"""The core's stages, run in order for every event (:func:`agent.core.default_stages`): vehicle
state through the compactor, signed documents, geofence, route (stop progress, proofs of
delivery, exceptions), ETAs, the GPS-lost rule, and the receipts of shell events; each one
implements :class:`agent.stages.base.Stage`.
"""
