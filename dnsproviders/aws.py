"""A boto3 session from an AWS app connection: its keys, or the role it assumes with them."""

from __future__ import annotations

import boto3
import botocore.config


def aws_session(
    credentials: dict, config: botocore.config.Config, *, role_session_name: str, duration: int = 900
) -> tuple[boto3.session.Session, str]:
    """(session, assumed role ARN or ""). botocore errors of AssumeRole propagate for the caller to word."""
    region = credentials.get("region") or "us-east-1"
    session = boto3.session.Session(
        aws_access_key_id=credentials.get("access_key_id"),
        aws_secret_access_key=credentials.get("secret_access_key"),
        region_name=region,
    )
    role_arn = credentials.get("role_arn")
    if not role_arn:
        return session, ""
    assumed = session.client("sts", config=config).assume_role(
        RoleArn=role_arn, RoleSessionName=role_session_name, DurationSeconds=duration
    )
    temporary = assumed["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=temporary["AccessKeyId"],
        aws_secret_access_key=temporary["SecretAccessKey"],
        aws_session_token=temporary["SessionToken"],
        region_name=region,
    )
    return session, assumed.get("AssumedRoleUser", {}).get("Arn") or role_arn
