"""The core's stages, run in order for every event: vehicle state, then the rules that watch it
(GPS lost), then the receipts of shell events. Geofence, route, alert rules and the compactor
join as further stages of the same protocol (:class:`agent.stages.base.Stage`).
"""
