// Helpers for the deployment tests (deploy.test.mjs, k6.test.mjs): the settings parleyd knows,
// the compose file as data, and nginx run with deploy/docker/nginx.conf in front of local
// instances.
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, PARLEYD, runCmd, runNginx } from './lib.mjs';

export const COMPOSE = path.join(ROOT, 'deploy/docker-compose.yml');
export const COMPOSE_NGINX = path.join(ROOT, 'deploy/docker/nginx.conf');
export const DOCKERFILE = path.join(ROOT, 'deploy/Dockerfile');

// The PARLEY_* settings this build of parleyd knows: the second column of `parleyd --help`
// (one line per setting: `  --flag  PARLEY_NAME  help [default]`).
export async function knownSettings() {
  const r = await runCmd(PARLEYD, ['--help'], { env: { PATH: process.env.PATH } });
  if (r.code !== 0) throw new Error(`parleyd --help exited ${r.code}: ${r.stderr}`);
  const names = new Set();
  for (const line of r.stdout.split('\n')) {
    const m = /^ {2}--[a-z0-9-]+\s+(PARLEY_[A-Z0-9_]+)\s/.exec(line);
    if (m) names.add(m[1]);
  }
  if (names.size < 20) throw new Error(`parleyd --help listed only ${names.size} settings:\n${r.stdout}`);
  return names;
}

// A YAML file as plain data, through PyYAML (Debian's python3-yaml, a package of
// deploy/dev/deps.sh): safe_load, merge keys (<<) resolved.
export async function loadYaml(file) {
  const py = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const r = await runCmd(py, ['-c', 'import json, sys, yaml\njson.dump(yaml.safe_load(open(sys.argv[1], encoding="utf-8")), sys.stdout)', file],
    { env: { PATH: process.env.PATH, LANG: 'C.UTF-8' } });
  if (r.code !== 0) throw new Error(`${path.basename(file)} does not parse as YAML: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
}

// A service's environment as an object (compose allows a map or a list of KEY=VALUE).
export function serviceEnv(svc) {
  const e = svc.environment || {};
  if (Array.isArray(e)) return Object.fromEntries(e.map((kv) => { const i = kv.indexOf('='); return i < 0 ? [kv, undefined] : [kv.slice(0, i), kv.slice(i + 1)]; }));
  return { ...e };
}

// Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR:?error}, $$) with `vars`.
export function interpolate(s, vars) {
  return String(s).replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (all, name, op, arg) => {
    if (all === '$$') return '$';
    const v = vars[name];
    if (op && op.endsWith('-')) return v ? v : arg;
    if (op && op.endsWith('?')) { if (!v) throw new Error(`compose would refuse: ${name}: ${arg}`); return v; }
    return v ?? '';
  });
}

// The parleyd instances of the compose file: services built from deploy/Dockerfile that do not
// just run --migrate. [{ name, svc, env, port }]
export function composeInstances(compose) {
  return Object.entries(compose.services).filter(([, s]) => s.build && s.build.dockerfile === 'deploy/Dockerfile'
    && !(s.command || []).includes('--migrate')).map(([name, svc]) => {
    const env = serviceEnv(svc);
    const m = /:(\d+)$/.exec(env.PARLEY_LISTEN || '0.0.0.0:8080');
    return { name, svc, env, port: Number(m[1]) };
  });
}

// nginx's upstream blocks: name -> { balance: 'ip_hash'|'least_conn'|..., servers: ['host:port'] }.
export function nginxUpstreams(conf) {
  const out = {};
  const text = conf.replace(/#[^\n]*/g, '');
  for (const m of text.matchAll(/upstream\s+(\S+)\s*\{([^}]*)\}/g)) {
    const body = m[2];
    out[m[1]] = {
      balance: (/^\s*(ip_hash|least_conn|hash\s[^;]*|random[^;]*);/m.exec(body) || [])[1] || 'round_robin',
      servers: [...body.matchAll(/^\s*server\s+(\S+)[^;]*;/gm)].map((x) => x[1]),
    };
  }
  return out;
}

// nginx with deploy/docker/nginx.conf in front of local instances: `servers` maps each compose
// host:port (parleyd-1:8080) to a local parleyd. Only the names, the listening port, pid,
// paths and logs change; the locations and upstream settings are the file's.
export function startComposeNginx(servers) {
  return runNginx(COMPOSE_NGINX, 'nginx-compose', (conf) => {
    for (const [hostPort, srv] of Object.entries(servers)) conf = conf.split(` ${hostPort} `).join(` 127.0.0.1:${srv.port} `);
    return conf;
  });
}
