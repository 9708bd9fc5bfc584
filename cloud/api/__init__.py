"""The control tower's HTTP API and pages (``dropline collector --http ADDR``).

Built on Starlette, served by uvicorn. Why these: Starlette is small (one dependency, anyio),
fully typed, and streams Server-Sent Events with a plain ``StreamingResponse``; its sync
endpoints run in a thread pool, so the blocking SQLite reads never stall the event loop. uvicorn
is its reference ASGI server and runs in a thread of the collector's process, beside the gRPC
server and the MQTT client. FastAPI would add pydantic for validation we do by hand in a few
lines; aiohttp and Flask bring their own server models (Flask has no async streaming).
"""
