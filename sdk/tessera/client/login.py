"""Login against the auth service and fetch a connect token.

A public endpoint serving TLS is reached with ``credentials`` (e.g.
``grpc.ssl_channel_credentials()`` for a publicly trusted certificate, or with
``root_certificates=`` for a private CA); without them the channel is plaintext.
"""

from __future__ import annotations

from typing import Any

import grpc

from tessera.v1 import auth_pb2, auth_pb2_grpc


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """The SDK's channel to ``address``: TLS with ``credentials``, else plaintext."""
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


async def guest_login(
    auth_address: str, device_id: str, *, credentials: grpc.ChannelCredentials | None = None
) -> auth_pb2.Session:
    """A session for a device id (a guest account is created on first use)."""
    async with open_channel(auth_address, credentials) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        session: auth_pb2.Session = await stub.GuestLogin(
            auth_pb2.GuestLoginRequest(device_id=device_id), timeout=10.0
        )
        return session


async def connect_token(
    auth_address: str,
    access_token: str,
    *,
    region: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> auth_pb2.ConnectToken:
    """A connect token (and channel keys) for the caller's player."""
    async with open_channel(auth_address, credentials) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        token: auth_pb2.ConnectToken = await stub.IssueConnectToken(
            auth_pb2.ConnectTokenRequest(region=region),
            metadata=(("authorization", f"Bearer {access_token}"),),
            timeout=10.0,
        )
        return token


async def guest_connect_token(
    auth_address: str, device_id: str, *, credentials: grpc.ChannelCredentials | None = None
) -> auth_pb2.ConnectToken:
    """Guest login, then a connect token: everything a client needs to connect."""
    session = await guest_login(auth_address, device_id, credentials=credentials)
    return await connect_token(auth_address, session.access_token, credentials=credentials)
