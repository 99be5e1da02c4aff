"""A Proximity-like FastAPI app for the sidecar's end-to-end tests.

It runs on Debian's own packages only (python3-fastapi, python3-uvicorn,
python3-jose, python3-sentry-sdk; bookworm ships sentry-sdk 1.9.10,
FastAPI 0.92, Starlette 0.26, uvicorn 0.17, python-jose 3.3), started by
e2e/trace_test.go as

    /usr/bin/python3 -I e2e/api/app.py --port PORT

with JWT_SECRET_KEY, SENTRY_DSN and TRACES_SAMPLE_RATE in its environment.
Like Proximity v1 (research/proximity.md §1, §3.1) it issues HS256 tokens
with python-jose ({sub, role, user_id, exp, iat}), answers errors as
{"detail": ...} and lets sentry_sdk's FastAPI integration trace every
request, continuing the sentry-trace/baggage the sidecar sends.
"""

import argparse
import datetime
import os
import sys

import sentry_sdk
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jose import JWTError, jwt
from pydantic import BaseModel
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import format_timestamp

ALGORITHM = "HS256"
SECRET_KEY = os.environ["JWT_SECRET_KEY"]

# username -> (password, user_id, role)
USERS = {
    "demo": ("demo1234", 2, "user"),
    "admin": ("admin1234", 1, "admin"),
}


class EnvelopeTransport(HttpTransport):
    """Sends error events as envelopes, as sentry-sdk 2.x does.

    sentry-sdk 1.9 posts errors to the deprecated store endpoint; Proximity
    requires sentry-sdk>=2.0, which sends everything as envelopes, and the
    Sentry double of the tests (internal/sentrytest) accepts envelopes only.
    Transactions already go as envelopes in 1.9.
    """

    def _send_event(self, event):
        envelope = Envelope(
            headers={
                "event_id": event.get("event_id"),
                "sent_at": format_timestamp(datetime.datetime.utcnow()),
            }
        )
        envelope.add_event(event)
        self._send_envelope(envelope)


sentry_sdk.init(
    dsn=os.environ["SENTRY_DSN"],
    traces_sample_rate=float(os.environ.get("TRACES_SAMPLE_RATE", "1.0")),
    integrations=[
        StarletteIntegration(transaction_style="url"),
        FastApiIntegration(transaction_style="url"),
    ],
    environment="e2e",
    release="api@1",
    transport=EnvelopeTransport,
    send_default_pii=False,
)

app = FastAPI(title="e2e API")
bearer = HTTPBearer(auto_error=False)


class Login(BaseModel):
    username: str
    password: str


def create_access_token(username, role, user_id):
    now = datetime.datetime.utcnow()
    claims = {
        "sub": username,
        "role": role,
        "user_id": user_id,
        "iat": now,
        "exp": now + datetime.timedelta(minutes=60),
    }
    return jwt.encode(claims, SECRET_KEY, algorithm=ALGORITHM)


def current_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials = Depends(bearer),
):
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status_code=401,
            detail="Authentication required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        claims = jwt.decode(credentials.credentials, SECRET_KEY, algorithms=[ALGORITHM])
    except JWTError:
        claims = {}
    if not all(k in claims for k in ("sub", "role", "user_id")):
        raise HTTPException(
            status_code=401,
            detail="Could not validate credentials",
            headers={"WWW-Authenticate": "Bearer"},
        )
    sentry_sdk.set_user(
        {
            "id": str(claims["user_id"]),
            "username": claims["sub"],
            "role": claims["role"],
            "ip_address": request.client.host if request.client else None,
        }
    )
    return claims


@app.get("/health")
def health():
    return {"status": "healthy", "version": "api@1"}


@app.post("/api/v1/auth/login")
def login(body: Login):
    user = USERS.get(body.username)
    if user is None or user[0] != body.password:
        raise HTTPException(
            status_code=401,
            detail="Incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    _, user_id, role = user
    return {
        "access_token": create_access_token(body.username, role, user_id),
        "token_type": "bearer",
        "expires_in": 3600,
        "user": {
            "id": user_id,
            "username": body.username,
            "email": None,
            "role": role,
            "is_active": True,
        },
    }


@app.get("/api/v1/apps")
def list_apps(claims=Depends(current_user)):
    return [
        {"id": "nginx-web", "catalog_id": "nginx", "hostname": "web", "status": "running", "owner": claims["sub"]},
        {"id": "wordpress-myblog", "catalog_id": "wordpress", "hostname": "myblog", "status": "stopped", "owner": claims["sub"]},
    ]


@app.get("/api/v1/echo-trace")
def echo_trace(request: Request):
    # getlist: a proxy that adds instead of sets shows up as two values.
    return {
        "sentry_trace": request.headers.getlist("sentry-trace"),
        "baggage": request.headers.getlist("baggage"),
    }


@app.get("/api/v1/fail")
def fail():
    raise RuntimeError("e2e: deliberate failure in the API")


@app.exception_handler(Exception)
async def unhandled(request: Request, exc: Exception):
    # Proximity answers unhandled errors with JSON; Starlette still re-raises
    # the exception after this answer, and sentry_sdk's ASGI middleware
    # captures it there.
    return JSONResponse(status_code=500, content={"detail": "Internal server error: %s" % exc})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    print(
        "e2e api: sentry-sdk %s, python %s, port %d"
        % (sentry_sdk.VERSION, sys.version.split()[0], args.port),
        flush=True,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
