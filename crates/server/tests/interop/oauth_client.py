"""Interop check: a stock OAuth 2.0 client library (requests-oauthlib) gets a token from tether with
the client credentials grant, and PyJWT verifies it against tether's JWKS. No tether-specific code.

usage: oauth_client.py BASE_URL CLIENT_ID CLIENT_SECRET   (prints the verified claims as JSON)
"""
import json
import os
import sys

import jwt
import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

# The test server listens on plain http on loopback.
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

base, client_id, client_secret = sys.argv[1:4]
meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()

results = {}
for method, include_client_id in (("client_secret_basic", False), ("client_secret_post", True)):
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    token = session.fetch_token(
        token_url=meta["token_endpoint"],
        client_id=client_id,
        client_secret=client_secret,
        include_client_id=include_client_id,
    )
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        signing_key.key,
        algorithms=["EdDSA"],
        audience=meta["issuer"],
        issuer=meta["issuer"],
        options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
    )
    header = jwt.get_unverified_header(token["access_token"])
    results[method] = {"claims": claims, "typ": header["typ"], "token_type": token["token_type"]}

print(json.dumps(results))
