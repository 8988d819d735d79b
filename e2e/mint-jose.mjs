// Mints signed tokens (JWTs) with the `jose` package, as a Node or browser application would:
// chute never checks its own tokens. Reads a JSON list of specs on stdin and prints a JSON
// list of tokens. A spec: {"alg": "HS256" | "RS256" | "ES256" | "EdDSA", "key": a secret, or
// the path of a private PKCS#8 PEM, "claims": {...}, "exp_in": seconds from now}.
import { readFileSync } from 'node:fs';
import { SignJWT, importPKCS8 } from 'jose';

const specs = JSON.parse(readFileSync(0, 'utf8'));
const tokens = [];
for (const s of specs) {
  const key = s.alg === 'HS256'
    ? new TextEncoder().encode(s.key)
    : await importPKCS8(readFileSync(s.key, 'utf8'), s.alg);
  let jwt = new SignJWT(s.claims || {}).setProtectedHeader({ alg: s.alg });
  if (s.exp_in !== undefined) jwt = jwt.setExpirationTime(Math.floor(Date.now() / 1000) + s.exp_in);
  tokens.push(await jwt.sign(key));
}
console.log(JSON.stringify(tokens));
