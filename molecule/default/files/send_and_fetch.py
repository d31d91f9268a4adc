"""Submit on the local 587 as carol to dave@molecule2.test, fetch it on the peer's 993,
print the DKIM signature it arrived with; then offer GTUBE to the peer's port 25.

Usage: send_and_fetch.py PEER_ADDRESS PEER_NAME CA_FILE  (runs on mol1)
"""

import email
import imaplib
import smtplib
import socket
import ssl
import sys
import time
import uuid

peer, peer_name, cafile = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cafile)
subject = f"molecule {uuid.uuid4()}"

smtp = smtplib.SMTP("127.0.0.1", 587, timeout=20)
smtp.ehlo("mol1.lab.test")
smtp._host = "mol1.lab.test"  # verify the certificate against the host's name
smtp.starttls(context=ctx)
smtp.ehlo("mol1.lab.test")
smtp.login("carol@molecule1.test", "carol-molecule-password")
smtp.sendmail(
    "carol@molecule1.test",
    ["dave@molecule2.test"],
    f"From: carol@molecule1.test\r\nTo: dave@molecule2.test\r\nSubject: {subject}\r\n\r\nhi\r\n",
)
smtp.quit()


class PeerIMAP(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout=None):
        raw = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(raw, server_hostname=peer_name)


# The instances are not in DNS: mol2's rspamd sees mail from a host without a PTR
# whose domain does not resolve, and may score it as spam, which the global Sieve
# script files into Junk. Delivered is delivered: both folders are looked in.
deadline = time.monotonic() + 60
while True:
    imap = PeerIMAP(peer, 993, ssl_context=ctx, timeout=20)
    imap.login("dave@molecule2.test", "dave-molecule-password")
    found, raw, folder = [], b"", ""
    for folder in ("INBOX", "Junk"):
        if imap.select(folder, readonly=True)[0] != "OK":  # Junk: made by its first message
            continue
        found = imap.search(None, "SUBJECT", f'"{subject}"')[1][0].split()
        if found:
            raw = imap.fetch(found[-1], "(BODY.PEEK[])")[1][0][1]
            break
    imap.logout()
    if found:
        print(f"delivered and fetched from {folder}: {subject}")
        signature = " ".join(email.message_from_bytes(raw)["DKIM-Signature"].split())
        print(f"DKIM-Signature: {signature}")
        break
    if time.monotonic() > deadline:
        sys.exit(f"{subject} did not reach dave@molecule2.test within 60 s")
    time.sleep(1)

gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
smtp = smtplib.SMTP(peer, 25, timeout=20)
smtp.ehlo("mol1.lab.test")
try:
    smtp.sendmail("someone@outside.test", ["dave@molecule2.test"],
                  f"From: someone@outside.test\r\nSubject: gtube\r\n\r\n{gtube}\r\n")
    sys.exit("the peer accepted GTUBE")
except smtplib.SMTPDataError as exc:
    print(f"GTUBE refused: {exc.smtp_code} {exc.smtp_error.decode()}")
smtp.quit()
