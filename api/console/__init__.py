"""The operations console: server-rendered pages under /console for operators and approvers.

Signed in with the same API keys as the API, or with the OIDC issuer (authorization code +
PKCE, api/console/oidc_sign_in.py); every page and action is authorized by the API's
own permission table (api/permissions.py, through api.auth.permitted) under the API route it
stands for, and every action calls the API route's own function, so the console can do nothing
the API would refuse.
"""
