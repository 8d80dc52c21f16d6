// HS256 token verification shared by the Node peers (the same tokens
// parley-bench mints for parleyd): the `sub` claim, or null.
import crypto from 'node:crypto';

export function verifyToken(token, secret) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return null;
  const mac = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== mac.length || !crypto.timingSafeEqual(sig, mac)) return null;
  let claims;
  try {
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch {
    return null;
  }
  if (typeof claims.sub !== 'string' || !claims.sub) return null;
  if (claims.exp && claims.exp * 1000 < Date.now()) return null;
  return claims.sub;
}
