// A real OpenID provider for affidavit's OIDC tests: the `oidc-provider` npm package
// (pinned in package.json / package-lock.json), on 127.0.0.1 only.
//
//   node tests/oidc/provider.mjs PORT
//
// Environment:
//   OIDC_REDIRECT_URIS  space-separated redirect URIs of the client `affidavit` (required)
//   OIDC_CLIENT_SECRET  its secret (client_secret_basic); default "affidavit-test-secret"
//
// Clients: `affidavit` (confidential, the server under test) and `other-app` (confidential,
// redirect http://127.0.0.1:9/other-callback: a second relying party whose genuine ID tokens
// carry another audience). PKCE with S256 is required of every client.
//
// Accounts (ACCOUNTS below): a login reports `amr` and `acr` as the account says, so that one
// account's login shows MFA (amr ["pwd", "otp"]) and another's does not (amr ["pwd"]).
//
// Interactions: no devInteractions. A test (or a person) logs in non-interactively with
//   POST /interaction/UID/login   login=NAME&password=PASSWORD   (form or JSON)
// in the same cookie jar that followed the authorization redirect; consent is granted
// in the same step (the test client is first-party). GET /interaction/UID shows the form.
//
// Test controls (this is a test fixture; never a production provider):
//   POST /__test/clock          {"offset_seconds": N}  the provider's clock runs N s off
//   POST /__test/next-id-token  {"id_token": JWT}      the next token response to `affidavit`
//                                                      carries this ID token instead of its own
//                                                      (a token substituted in transit)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node provider.mjs PORT');
  process.exit(2);
}
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(/\s+/).filter(Boolean);
if (redirectUris.length === 0) {
  console.error('OIDC_REDIRECT_URIS is required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// -- the clock (test control) -----------------------------------------------------------------
const realNow = Date.now.bind(Date);
let offsetMs = 0;
Date.now = () => realNow() + offsetMs;

// -- accounts ---------------------------------------------------------------------------------
const MFA_ACR = 'urn:affidavit:test:mfa';
const PWD_ACR = 'urn:affidavit:test:pwd';
const ACCOUNTS = {
  alice: { sub: 'alice-0001', email: 'alice@example.test', amr: ['pwd', 'otp'], acr: MFA_ACR },
  bob: { sub: 'bob-0002', email: 'bob@example.test', amr: ['pwd'], acr: PWD_ACR },
  carol: { sub: 'carol-0003', email: 'carol@example.test', amr: ['pwd', 'otp'], acr: MFA_ACR },
  dave: { sub: 'dave-0004', email: 'dave@example.test', amr: ['pwd', 'otp'], acr: MFA_ACR },
  erin: { sub: 'erin-0005', email: 'erin@example.test', amr: ['pwd', 'hwk'], acr: MFA_ACR },
};
const PASSWORD = 'provider password 1';
const bySub = Object.fromEntries(Object.entries(ACCOUNTS).map(([, a]) => [a.sub, a]));

// -- keys -------------------------------------------------------------------------------------
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'affidavit',
      client_secret: process.env.OIDC_CLIENT_SECRET || 'affidavit-test-secret',
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'other-app',
      client_secret: 'other-app-secret',
      redirect_uris: ['http://127.0.0.1:9/other-callback'],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signing] },
  cookies: { keys: ['affidavit-test-cookie-key-0123456789'] },
  acrValues: [MFA_ACR, PWD_ACR],
  claims: { openid: ['sub', 'acr', 'amr', 'auth_time'], email: ['email', 'email_verified'] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // the interaction, session and grant outlive a clock moved back by /__test/clock (their cookies
  // expire by the provider's clock); an ID token lives 5 minutes
  ttl: { IdToken: 300, AccessToken: 300, AuthorizationCode: 60, Interaction: 3600, Session: 7200, Grant: 7200 },
  async findAccount(_ctx, sub) {
    const account = bySub[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: account.email, email_verified: true };
      },
    };
  },
});
provider.proxy = false;

let nextIdToken = null;

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] || '').startsWith('application/json')) {
    return text ? JSON.parse(text) : {};
  }
  return Object.fromEntries(new URLSearchParams(text));
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

provider.use(async (ctx, next) => {
  // test controls
  if (ctx.method === 'POST' && ctx.path === '/__test/clock') {
    const body = await readBody(ctx.req);
    offsetMs = Number(body.offset_seconds || 0) * 1000;
    ctx.body = { offset_seconds: offsetMs / 1000 };
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/__test/next-id-token') {
    const body = await readBody(ctx.req);
    nextIdToken = body.id_token || null;
    ctx.body = { armed: nextIdToken !== null };
    return;
  }
  // the interaction (login + consent in one step)
  const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(ctx.path);
  if (match) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== match[1]) ctx.throw(400, 'interaction mismatch');
    if (ctx.method === 'GET' && !match[2]) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Test IdP login</title>
<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">
<p>Signing in to ${escapeHtml(details.params.client_id)} (prompt: ${escapeHtml(details.prompt.name)})</p>
<input name="login" placeholder="login"> <input name="password" type="password">
<button>Sign in</button></form>`;
      return;
    }
    if (ctx.method === 'POST' && match[2]) {
      const body = await readBody(ctx.req);
      const account = ACCOUNTS[body.login];
      if (!account || body.password !== PASSWORD) {
        ctx.status = 401;
        ctx.body = { error: 'wrong login or password' };
        return;
      }
      const grant = new provider.Grant({ accountId: account.sub, clientId: details.params.client_id });
      grant.addOIDCScope(String(details.params.scope || 'openid'));
      const grantId = await grant.save();
      await provider.interactionFinished(ctx.req, ctx.res, {
        login: { accountId: account.sub, amr: account.amr, acr: account.acr, remember: true },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return;
    }
    ctx.throw(405);
  }
  await next();
  // an ID token substituted in the token response to `affidavit` (test control)
  if (
    nextIdToken !== null && ctx.method === 'POST' && ctx.path === '/token'
    && ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.id_token
    && ctx.oidc?.client?.clientId === 'affidavit'
  ) {
    ctx.body = { ...ctx.body, id_token: nextIdToken };
    nextIdToken = null;
  }
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} listening`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.closeAllConnections(); process.exit(0); });
}
