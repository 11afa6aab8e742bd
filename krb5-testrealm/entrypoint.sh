#!/bin/sh
# Create the realm in /realm (unless it exists) and run krb5kdc in the foreground.
set -eu
python3 /opt/krb5-testrealm/bootstrap.py /realm --if-missing \
    --realm "$REALM" --port "$KDC_PORT"
export KRB5_KDC_PROFILE=/realm/kdc.conf KRB5_CONFIG=/realm/krb5.conf
exec krb5kdc -n -r "$REALM"
