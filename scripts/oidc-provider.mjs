// A small OpenID provider for the identity tests: node-oidc-provider (a
// certified implementation, scripts/install-oidc-provider.sh) on 127.0.0.1
// with fresh signing keys and JWT access tokens for one resource (the
// gateway's FHIR base). Two clients: a backend service (client
// credentials) and a patient-facing app (authorization code with PKCE:
// a SMART standalone patient launch). The app's user logs in without a
// password: the login_hint of the authorization request is the account,
// which is also the patient id put into the token's launch context
// (`patient`, `fhirUser`), and consent is given at once.
//
//   node scripts/oidc-provider.mjs <port> <resource>
//
// On Node.js 20 the provider prints "Unsupported runtime" and works; it
// asks for 22. oidc-provider is resolved from INKAN_OIDC_PROVIDER_DIR (else the working
// directory), where the install script put its node_modules. Prints
// `ready <issuer>` once listening.
import { generateKeyPairSync } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';

const [port, resource] = process.argv.slice(2);
if (!port || !resource) {
  console.error('usage: oidc-provider.mjs <port> <resource>');
  process.exit(2);
}
// The provider is installed outside the clone; resolve it from there.
const require = createRequire(path.join(process.env.INKAN_OIDC_PROVIDER_DIR ?? process.cwd(), 'x.js'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const issuer = `http://127.0.0.1:${port}`;
const jwk = (type, options, alg, kid) => ({
  ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  alg,
  kid,
  use: 'sig',
});
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'RS256', 'rsa-1'),
  jwk('ec', { namedCurve: 'P-256' }, 'ES256', 'ec-1'),
];
// SMART scopes the tests ask for, v1 (`.read`) and v2 (`.rs`), exactly as
// requested: the provider grants only values it lists.
const scope = [
  'system/*.read', 'system/*.rs', 'system/*.cruds', 'system/Patient.rs', 'system/Observation.rs',
  'patient/*.read', 'patient/*.rs', 'patient/Patient.rs', 'patient/Observation.read',
  'patient/Observation.rs', 'user/*.rs',
].join(' ');

const provider = new Provider(issuer, {
  jwks: { keys },
  scopes: ['openid', ...scope.split(' ')],
  clients: [
    {
      client_id: 'inkan-test',
      client_secret: 'inkan-test-secret',
      scope,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
    {
      client_id: 'inkan-patient-app',
      client_secret: 'inkan-patient-app-secret',
      scope: `openid ${scope}`,
      grant_types: ['authorization_code'],
      redirect_uris: ['http://127.0.0.1/callback'],
      response_types: ['code'],
    },
  ],
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  // The SMART launch context: the logged-in account is the patient.
  extraTokenClaims: (ctx, token) =>
    token.accountId ? { patient: token.accountId, fhirUser: `Patient/${token.accountId}` } : undefined,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
        return { scope, audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
});
// Login and consent without a page: the account is the login_hint, and
// every scope the provider says is missing is granted (the SMART scopes
// are both OpenID scopes of the provider and scopes of the resource).
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    if (!params.login_hint) {
      ctx.status = 400;
      ctx.body = 'login_hint names the account';
      return undefined;
    }
    result = { login: { accountId: params.login_hint } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope = [], missingResourceScopes = {} } = prompt.details;
    if (missingOIDCScope.length) grant.addOIDCScope(missingOIDCScope.join(' '));
    for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true }));
  return undefined;
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
