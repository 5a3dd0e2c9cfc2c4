"""The seed service's design, for comparison: Flask, a cachetools TTL+LRU
cache in the process, redis-py on a miss. `bench/run.py` serves it with
`flask run` (threaded) from a private virtualenv."""

import os

import redis
from cachetools import TTLCache
from flask import Flask, jsonify

app = Flask(__name__)
store = redis.Redis(
    host=os.environ.get("REDIS_HOST", "127.0.0.1"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
    db=int(os.environ.get("REDIS_DB", "0")),
)
cache = TTLCache(
    maxsize=int(os.environ.get("CACHE_CAPACITY", "10000")),
    ttl=float(os.environ.get("CACHE_TTL", "60")),
)


@app.route("/get/<path:key>")
def get(key):
    value = cache.get(key)
    if value is None:
        raw = store.get(key)
        if raw is None:
            return jsonify(error="key not found", key=key), 404
        value = raw.decode("utf-8", "replace")
        cache[key] = value
    return jsonify(key=key, value=value)
