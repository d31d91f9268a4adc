#!/bin/sh
# A minimal Postfix + Dovecot on a lab host (Debian 12: Dovecot 2.3, Debian 13: 2.4),
# for the server probe's tests, independent of the roles. Idempotent. Args: FQDN RELAYHOST
# See shared/LAB.md for the traps this avoids (maillog_file, log_path, a real cert, no PAM).
set -eu
fqdn="$1"
relay="$2"
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s postfix dovecot-imapd procps >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
    echo "postfix postfix/mailname string $fqdn" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postfix dovecot-imapd procps >/dev/null
fi
getent group vmail >/dev/null || groupadd -r vmail
getent passwd vmail >/dev/null || useradd -r -g vmail -d /var/vmail -s /usr/sbin/nologin vmail
install -d -o vmail -g vmail /var/vmail
install -d -m 755 /etc/ssl/mailfleet
if [ ! -s /etc/ssl/mailfleet/fullchain.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=$fqdn" -addext "subjectAltName=DNS:$fqdn" \
        -keyout /etc/ssl/mailfleet/privkey.pem -out /etc/ssl/mailfleet/fullchain.pem 2>/dev/null
    chmod 600 /etc/ssl/mailfleet/privkey.pem
fi
case "$(dovecot --version)" in
2.3.*) cat > /etc/dovecot/dovecot.conf <<CONF
protocols = imap
listen = *
log_path = /var/log/dovecot.log
ssl = required
ssl_cert = </etc/ssl/mailfleet/fullchain.pem
ssl_key = </etc/ssl/mailfleet/privkey.pem
auth_mechanisms = plain
disable_plaintext_auth = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u /etc/dovecot/users
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=/var/vmail/%d/%n
}
mail_location = maildir:~/Maildir
CONF
;;
*) cat > /etc/dovecot/dovecot.conf <<CONF
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
protocols = imap
listen = *
log_path = /var/log/dovecot.log
ssl = required
ssl_server_cert_file = /etc/ssl/mailfleet/fullchain.pem
ssl_server_key_file = /etc/ssl/mailfleet/privkey.pem
auth_mechanisms = plain
auth_allow_cleartext = no
passdb passwd-file {
  passwd_file_path = /etc/dovecot/users
  default_password_scheme = PLAIN
}
userdb static {
  fields {
    uid = vmail
    gid = vmail
    home = /var/vmail/%{user | domain}/%{user | username}
  }
}
mail_driver = maildir
mail_path = %{home}/Maildir
CONF
;;
esac
printf 'probe@%s:{PLAIN}secret\n' "$fqdn" > /etc/dovecot/users
chown root:dovecot /etc/dovecot/users
chmod 640 /etc/dovecot/users
postconf -e "maillog_file = /var/log/postfix.log" "myhostname = $fqdn" \
    "mydestination = localhost" "relayhost = $relay" "inet_interfaces = all" \
    "smtp_connect_timeout = 5s"
# Detached from our pipes (an init script holding them open hangs `podman exec`).
/etc/init.d/dovecot restart </dev/null >/dev/null 2>&1
/etc/init.d/postfix restart </dev/null >/dev/null 2>&1
# Postfix's master daemonizes; give both up to 10 s to show up.
for _ in $(seq 50); do
    pgrep -f "^/usr/sbin/dovecot( |$)" >/dev/null && pgrep -f "^/usr/lib/postfix/sbin/master( |$)" >/dev/null && exit 0
    sleep 0.2
done
echo "postfix or dovecot did not start; see /var/log/postfix.log /var/log/dovecot.log" >&2
exit 1
