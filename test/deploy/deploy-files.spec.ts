/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-argument --
   Compose files and manifests are untyped YAML here: their shape is what the schemas under test check. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigSchema, loadConfig } from '#libs/config';
import { REPO_ROOT, startParley, type ParleyServer } from '../support/parley-server.js';

/**
 * No container engine or API server runs here, so the deployment files are
 * checked offline: docker-compose.yml against the Compose specification's JSON
 * schema, every manifest `kubectl kustomize k8s` renders against the
 * Kubernetes OpenAPI schemas (kubernetes-models), the files against each other
 * and against the apps, and the container entrypoint by running it.
 */

type Json = Record<string, any>;

const COMPOSE_SCHEMA = join(REPO_ROOT, '../shared/schemas/compose-spec.json');
const APPS = readdirSync(join(REPO_ROOT, 'apps'));
const readRepo = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');

/** The Compose file as Compose reads it: YAML anchors and `<<` merge keys resolved. */
const compose = (): Json => parse(readRepo('docker-compose.yml'), { merge: true }) as Json;

function composeValidator(): ValidateFunction {
  if (!existsSync(COMPOSE_SCHEMA)) throw new Error(`the Compose schema is not at ${COMPOSE_SCHEMA} (a copy lives in shared/schemas beside the repo)`);
  const schema = JSON.parse(readFileSync(COMPOSE_SCHEMA, 'utf8')) as Json;
  // The schema is draft-07 but names its meta-schema by an https URL ajv does not know; it uses non-standard keywords and formats.
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, validateFormats: false });
  return ajv.compile(schema);
}

/** What `kubectl kustomize k8s` renders, one object per manifest. */
function kustomize(): Json[] {
  const run = spawnSync('kubectl', ['kustomize', join(REPO_ROOT, 'k8s')], { encoding: 'utf8' });
  if (run.error) throw new Error(`kubectl is needed to render k8s/ (apt-get install kubernetes-client): ${run.error.message}`);
  if (run.status !== 0) throw new Error(`kubectl kustomize k8s failed: ${run.stderr}`);
  return parseAllDocuments(run.stdout).map((d) => d.toJS() as Json);
}

type Model = new (data: Json) => { validate(): void };

/** Validates one manifest against the schema of its apiVersion and kind; throws naming what is wrong. */
async function validateManifest(manifest: Json): Promise<void> {
  const { apiVersion, kind } = manifest as { apiVersion?: unknown; kind?: unknown };
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') throw new Error('a manifest without apiVersion and kind');
  let models: Record<string, Model | undefined>;
  try {
    models = (await import(/* @vite-ignore */ `kubernetes-models/${apiVersion}`)) as Record<string, Model | undefined>;
  } catch {
    throw new Error(`unknown apiVersion ${apiVersion}`);
  }
  const model = models[kind];
  if (!model) throw new Error(`unknown kind ${kind} in ${apiVersion}`);
  new model(manifest).validate();
}

const byKind = (manifests: Json[], kind: string) => manifests.filter((m) => m.kind === kind);
const named = (manifests: Json[], kind: string, name: string): Json => {
  const found = manifests.find((m) => m.kind === kind && m.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in k8s/`);
  return found;
};
/** The component label of a workload: gateway, presence, …, redis. */
const componentOf = (m: Json): string => m.metadata.labels['app.kubernetes.io/component'] as string;
const appArgOf = (deployment: Json): string => deployment.spec.template.spec.containers[0].args[0] as string;

describe('docker-compose.yml', () => {
  let validate: ValidateFunction;
  beforeAll(() => {
    validate = composeValidator();
  });

  it('is valid per the Compose specification', () => {
    expect(validate(compose()), JSON.stringify(validate.errors, null, 2)).toBe(true);
  });

  it('rejects copies with a wrong type, an unknown key or a bad depends_on condition (the validation bites)', () => {
    const mutations: ((c: Json) => void)[] = [
      (c) => (c.services.redis.restart = 42),
      (c) => (c.services['gateway-1'].helthcheck = c.services['gateway-1'].healthcheck),
      (c) => (c.services['gateway-1'].depends_on.redis.condition = 'service_happy'),
      (c) => (c.networks.parley.enable_ipv6 = { yes: true }),
      (c) => (c.services.mqtt.ports = '1883:1883'),
    ];
    for (const mutate of mutations) {
      const copy = compose();
      mutate(copy);
      expect(validate(copy), mutate.toString()).toBe(false);
    }
  });

  it('refers only to services, networks and volumes it declares (what the schema cannot see)', () => {
    const c = compose();
    for (const [name, s] of Object.entries(c.services as Record<string, Json>)) {
      for (const dep of Object.keys(s.depends_on ?? {})) expect(Object.keys(c.services), `${name} depends_on ${dep}`).toContain(dep);
      // A list of networks, or a map of them with settings (a fixed address).
      const networks = Array.isArray(s.networks) ? (s.networks as string[]) : Object.keys(s.networks ?? {});
      for (const net of networks) expect(Object.keys(c.networks), `${name} network ${net}`).toContain(net);
      for (const volume of (s.volumes ?? []) as string[]) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('.')) expect(existsSync(join(REPO_ROOT, source)), `${name} mounts ${source}`).toBe(true);
        else expect(Object.keys(c.volumes), `${name} volume ${source}`).toContain(source);
      }
    }
  });

  it('runs Redis with AOF and a health check, two gateways behind a TCP load balancer on 1883, one of each service, on an IPv6 network', () => {
    const c = compose();
    const services = c.services as Record<string, Json>;
    const redis = services.redis!;
    expect(redis.command.join(' ')).toMatch(/--appendonly yes/);
    expect(redis.healthcheck.test).toContain('ping');
    expect(redis.volumes.join(' ')).toMatch(/:\/data$/);

    const gateways = Object.keys(services).filter((s) => services[s]!.command?.[0] === 'gateway');
    expect(gateways).toHaveLength(2);
    // Each gateway has its own id: presence records connections per gateway.
    expect(new Set(gateways.map((g) => services[g]!.environment.PARLEY_GATEWAY_ID)).size).toBe(2);

    const lb = services.mqtt!;
    expect(lb.ports).toEqual(['1883:1883']);
    const haproxy = readRepo('deploy/haproxy.cfg');
    expect(lb.volumes[0]).toMatch(/^\.\/deploy\/haproxy\.cfg:/);
    expect(haproxy).toMatch(/^\s*mode tcp$/m);
    expect(haproxy).toMatch(/^\s*bind :::1883 v4v6$/m);
    for (const g of gateways) {
      expect(haproxy).toMatch(new RegExp(`^\\s*server ${g} ${g}:${services[g]!.environment.PARLEY_MQTT_PORT}$`, 'm'));
      expect(lb.depends_on[g]).toEqual({ condition: 'service_healthy' });
    }

    for (const [name, s] of Object.entries(services)) {
      expect(s.restart, name).toBe('unless-stopped');
      expect(s.healthcheck, name).toBeDefined();
      if (name !== 'redis') expect(s.depends_on, name).toBeDefined();
      for (const dep of Object.values<Json>(s.depends_on ?? {})) expect(dep.condition, name).toBe('service_healthy');
    }
    expect(c.networks.parley.enable_ipv6).toBe(true);
    expect(c.networks.parley.ipam.config.some((n: Json) => String(n.subnet).includes(':'))).toBe(true);
  });
});

describe('deploy/haproxy.cfg', () => {
  /** `haproxy -c`: parses and checks a configuration without starting (unresolvable server names only warn). */
  const check = (config: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-haproxy-'));
    try {
      writeFileSync(join(dir, 'haproxy.cfg'), config);
      const run = spawnSync('haproxy', ['-c', '-f', join(dir, 'haproxy.cfg')], { encoding: 'utf8' });
      if (run.error) throw new Error(`haproxy is needed to check deploy/haproxy.cfg (apt-get install haproxy): ${run.error.message}`);
      return { status: run.status, output: run.stdout + run.stderr };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('is a configuration HAProxy accepts', () => {
    const run = check(readRepo('deploy/haproxy.cfg'));
    expect(run.status, run.output).toBe(0);
    expect(run.output).toContain('Configuration file is valid');
  });

  it('is refused by HAProxy when broken (the check bites)', () => {
    for (const broken of [
      readRepo('deploy/haproxy.cfg').replace('balance leastconn', 'balance fewest'),
      readRepo('deploy/haproxy.cfg').replace('bind :::1883 v4v6', 'bind :::1883 v4v6 nosuchoption'),
    ])
      expect(check(broken).status).not.toBe(0);
  });
});

describe('k8s/ (kustomize base)', () => {
  let manifests: Json[];
  beforeAll(() => {
    manifests = kustomize();
  });

  it('renders only manifests that are valid per the Kubernetes schemas', async () => {
    expect(manifests.length).toBeGreaterThan(0);
    for (const m of manifests) await expect(validateManifest(m), `${m.kind} ${m.metadata?.name}`).resolves.toBeUndefined();
  });

  it('rejects copies with a wrong type, a missing required field or an unknown kind (the validation bites)', async () => {
    const mutations: [kind: string, mutate: (m: Json) => void][] = [
      ['Deployment', (m) => (m.spec.replicas = 'two')],
      ['Deployment', (m) => (m.spec.template.spec.containers[0].readinessProbe.periodSeconds = '5s')],
      ['Deployment', (m) => delete m.spec.selector],
      ['Service', (m) => (m.spec.ports[0].port = 'mqtt-port')],
      ['HorizontalPodAutoscaler', (m) => delete m.spec.scaleTargetRef],
      ['StatefulSet', (m) => (m.spec.volumeClaimTemplates = { data: '5Gi' })],
      ['PodDisruptionBudget', (m) => (m.kind = 'PodDisruptionBugdet')],
    ];
    for (const [kind, mutate] of mutations) {
      const copy = structuredClone(byKind(manifests, kind)[0]!);
      mutate(copy);
      await expect(validateManifest(copy), `${kind}: ${mutate.toString()}`).rejects.toThrow();
    }
  });

  it('refers only to objects it defines, with selectors that match their pods (what the schemas cannot see)', () => {
    const workloads = [...byKind(manifests, 'Deployment'), ...byKind(manifests, 'StatefulSet')];
    const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
    for (const w of workloads) {
      const pod = w.spec.template;
      expect(matches(w.spec.selector.matchLabels, pod.metadata.labels), `${w.metadata.name} selector`).toBe(true);
      for (const c of pod.spec.containers as Json[]) {
        for (const from of (c.envFrom ?? []) as Json[]) named(manifests, 'ConfigMap', from.configMapRef.name);
        for (const env of (c.env ?? []) as Json[]) {
          const ref = env.valueFrom?.secretKeyRef;
          if (ref) expect(named(manifests, 'Secret', ref.name).stringData, `${w.metadata.name} ${env.name}`).toHaveProperty(ref.key);
        }
      }
    }
    // Each workload's selector picks its own pods only.
    for (const w of workloads)
      for (const other of workloads.filter((o) => o !== w))
        expect(matches(w.spec.selector.matchLabels, other.spec.template.metadata.labels), `${w.metadata.name} vs ${other.metadata.name}`).toBe(false);
    for (const svc of byKind(manifests, 'Service')) {
      const targets = workloads.filter((w) => matches(svc.spec.selector, w.spec.template.metadata.labels));
      expect(targets.length, `Service ${svc.metadata.name}`).toBe(1);
      for (const port of svc.spec.ports as Json[])
        expect(
          targets[0]!.spec.template.spec.containers[0].ports.map((p: Json) => p.name),
          `Service ${svc.metadata.name}`,
        ).toContain(port.targetPort);
    }
    const redis = named(manifests, 'StatefulSet', 'parley-redis');
    named(manifests, 'Service', redis.spec.serviceName);
    for (const w of byKind(manifests, 'Deployment')) {
      const env = w.spec.template.spec.containers[0].env as Json[];
      expect(env.find((e) => e.name === 'REDIS_URL')?.value, w.metadata.name).toBe(`redis://:$(REDIS_PASSWORD)@${redis.spec.serviceName}:6379`);
      // $(VAR) is expanded only from variables defined before it.
      expect(env.findIndex((e) => e.name === 'REDIS_PASSWORD')).toBeLessThan(env.findIndex((e) => e.name === 'REDIS_URL'));
    }
  });

  it('has Deployments with probes, a dual-stack LoadBalancer for MQTT, a PDB and an HPA for gateways, ConfigMap, Secret and Redis with AOF on a volume', () => {
    for (const d of byKind(manifests, 'Deployment')) {
      const container = d.spec.template.spec.containers[0];
      expect(container.readinessProbe.httpGet.path, d.metadata.name).toBe('/readyz');
      expect(container.livenessProbe.httpGet.path, d.metadata.name).toBe('/healthz');
    }
    const lb = named(manifests, 'Service', 'parley-mqtt');
    expect(lb.spec).toMatchObject({ type: 'LoadBalancer', ipFamilyPolicy: 'PreferDualStack' });
    // The API server refuses a Service naming a family the cluster is not configured for, whatever its policy: a base
    // that names both would not apply on a single-stack cluster. PreferDualStack alone adds the second where there is one.
    for (const svc of byKind(manifests, 'Service')) expect(svc.spec.ipFamilies, `Service ${svc.metadata.name}`).toBeUndefined();
    expect(lb.spec.ports).toEqual([expect.objectContaining({ port: 1883, protocol: 'TCP' })]);
    // The gateways' per-address limits (failed logins, registrations, anonymous connections) and logs need each client's
    // own address: with the default policy (Cluster) a node passes connections on from its own address, so every client
    // that came in through one node would share it, and one client's wrong passwords would lock the others out.
    expect(lb.spec.externalTrafficPolicy).toBe('Local');
    const gateway = named(manifests, 'Deployment', 'parley-gateway');
    expect(lb.spec.selector).toEqual(gateway.spec.selector.matchLabels);
    expect(named(manifests, 'PodDisruptionBudget', 'parley-gateway').spec.selector.matchLabels).toEqual(gateway.spec.selector.matchLabels);
    const hpa = named(manifests, 'HorizontalPodAutoscaler', 'parley-gateway');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'parley-gateway' });
    expect(byKind(manifests, 'ConfigMap')).toHaveLength(1);
    expect(byKind(manifests, 'Secret')).toHaveLength(1);

    const redis = named(manifests, 'StatefulSet', 'parley-redis');
    expect(redis.spec.template.spec.containers[0].args.join(' ')).toMatch(/--appendonly yes/);
    // Full below the container's limit, Redis refuses writes and evicts nothing, rather than be killed by the kernel.
    expect(redis.spec.template.spec.containers[0].args.join(' ')).toMatch(/--maxmemory 3gb --maxmemory-policy noeviction/);
    expect(redis.spec.volumeClaimTemplates[0].metadata.name).toBe(redis.spec.template.spec.containers[0].volumeMounts[0].name);
  });
});

describe('the deployment files agree with each other and with the apps', () => {
  let manifests: Json[];
  let configMap: Json;
  beforeAll(() => {
    manifests = kustomize();
    configMap = byKind(manifests, 'ConfigMap')[0]!.data as Json;
  });

  it('runs every remote service the gateways name, in compose and in k8s', () => {
    const services = compose().services as Record<string, Json>;
    const remote = (services['gateway-1']!.environment.PARLEY_REMOTE_SERVICES as string).split(',');
    expect(remote.length).toBeGreaterThan(0);
    expect((configMap.PARLEY_REMOTE_SERVICES as string).split(',')).toEqual(remote);
    for (const service of remote) {
      expect(services[service]?.command, `compose service ${service}`).toEqual([service]);
      expect(appArgOf(named(manifests, 'Deployment', `parley-${service}`)), `k8s Deployment parley-${service}`).toBe(service);
    }
  });

  it('names only apps that exist in apps/', () => {
    const services = compose().services as Record<string, Json>;
    const composeApps = Object.values(services).flatMap((s) => (s.image === 'parley:latest' ? [s.command[0] as string] : []));
    const k8sApps = byKind(manifests, 'Deployment').map(appArgOf);
    expect(k8sApps.sort()).toEqual([...new Set(composeApps)].sort());
    for (const app of composeApps) expect(APPS, `apps/${app}`).toContain(app);
    for (const d of byKind(manifests, 'Deployment')) expect(componentOf(d)).toBe(appArgOf(d));
  });

  it('has HAProxy send the PROXY protocol to the gateways, which trust it from the compose network, and health checks go without it', () => {
    const services = compose().services as Record<string, Json>;
    const haproxy = readRepo('deploy/haproxy.cfg');
    const defaultServer = haproxy.split('\n').find((l) => /^\s*default-server /.test(l))!;
    expect(defaultServer.split(/\s+/)).toContain('send-proxy-v2');
    // A check with a port of its own sends no PROXY header (HAProxy's check-send-proxy would force one): /readyz is plain HTTP.
    expect(defaultServer).toMatch(/ check port 8080 /);
    expect(haproxy).not.toMatch(/check-send-proxy|send-proxy(?!-v2)/);
    expect(haproxy).not.toMatch(/^\s*server .*\bno-send-proxy/m);
    const subnets = (compose().networks.parley.ipam.config as Json[]).map((n) => n.subnet as string);
    expect(subnets).toEqual(['172.30.83.0/24', 'fd00:7061:726c:6579::/64']);
    // The gateways trust HAProxy's own fixed addresses, in the network's subnets, and nothing else on the network.
    const pinned = services.mqtt!.networks.parley as Json;
    const haproxyAt = [pinned.ipv4_address as string, pinned.ipv6_address as string];
    expect(haproxyAt[0]!.startsWith('172.30.83.') && haproxyAt[1]!.startsWith('fd00:7061:726c:6579::')).toBe(true);
    const gateways = Object.keys(services).filter((s) => services[s]!.command?.[0] === 'gateway');
    for (const g of gateways) {
      const from = loadConfig(services[g]!.environment).PARLEY_PROXY_FROM;
      expect(from, g).toEqual(haproxyAt);
    }
    // Only the gateways take MQTT.
    for (const [name, s] of Object.entries(services)) if (!gateways.includes(name)) expect(s.environment?.PARLEY_PROXY_FROM, name).toBeUndefined();
  });

  it('gives every app settings the server itself accepts', () => {
    for (const [name, s] of Object.entries(compose().services as Record<string, Json>)) {
      if (s.image !== 'parley:latest') continue;
      expect(() => loadConfig(s.environment), `compose ${name}`).not.toThrow();
    }
    // The k8s pods get REDIS_URL from the Secret at run time: the same shape stands in for it here.
    expect(() => loadConfig({ ...configMap, REDIS_URL: 'redis://:secret@parley-redis:6379' })).not.toThrow();
  });

  it('sets only settings the apps read: a misspelt or renamed one would be ignored, its default silently used', () => {
    const settings = new Set(Object.keys(ConfigSchema.shape));
    for (const [name, s] of Object.entries(compose().services as Record<string, Json>)) {
      if (s.image !== 'parley:latest') continue;
      for (const key of Object.keys(s.environment ?? {})) expect(settings.has(key), `compose ${name}: ${key}`).toBe(true);
    }
    for (const key of Object.keys(configMap)) expect(settings.has(key), `ConfigMap: ${key}`).toBe(true);
    for (const w of byKind(manifests, 'Deployment')) {
      const container = w.spec.template.spec.containers[0];
      const env = (container.env ?? []) as Json[];
      // A variable the apps do not read is there only to be put into another one ($(REDIS_PASSWORD) in REDIS_URL).
      const referenced = JSON.stringify([env.map((e) => e.value), container.args]);
      for (const { name } of env) expect(settings.has(name) || referenced.includes(`$(${name})`), `${w.metadata.name}: ${name}`).toBe(true);
    }
  });

  it('probes the HTTP port the apps listen on (PARLEY_HTTP_PORT) and exposes the MQTT port they listen on', () => {
    for (const d of byKind(manifests, 'Deployment')) {
      const container = d.spec.template.spec.containers[0];
      const portOf = (ref: unknown) => (typeof ref === 'number' ? ref : container.ports.find((p: Json) => p.name === ref)?.containerPort);
      expect(String(portOf(container.readinessProbe.httpGet.port)), d.metadata.name).toBe(configMap.PARLEY_HTTP_PORT);
      expect(String(portOf(container.livenessProbe.httpGet.port)), d.metadata.name).toBe(configMap.PARLEY_HTTP_PORT);
      expect(String(d.spec.template.metadata.annotations['prometheus.io/port'])).toBe(configMap.PARLEY_HTTP_PORT);
    }
    const gateway = named(manifests, 'Deployment', 'parley-gateway').spec.template.spec.containers[0];
    const mqtt = named(manifests, 'Service', 'parley-mqtt').spec.ports[0];
    expect(String(gateway.ports.find((p: Json) => p.name === mqtt.targetPort).containerPort)).toBe(configMap.PARLEY_MQTT_PORT);
    // Compose: the health check asks the entrypoint to probe PARLEY_HTTP_PORT; HAProxy checks readiness on it.
    const services = compose().services as Record<string, Json>;
    for (const [name, s] of Object.entries(services)) {
      if (s.image !== 'parley:latest') continue;
      expect(s.healthcheck.test, name).toEqual(['CMD', '/app/deploy/docker-entrypoint.sh', 'probe', '/healthz']);
      expect(s.environment.PARLEY_HTTP_PORT, name).toBe('8080');
    }
    expect(readRepo('deploy/haproxy.cfg')).toMatch(/check port 8080 /);
    expect(readRepo('deploy/haproxy.cfg')).toMatch(/http-check send meth GET uri \/readyz/);
  });

  it('builds the image in two stages and starts every container through the entrypoint', () => {
    const dockerfile = readRepo('Dockerfile');
    const stages = [...dockerfile.matchAll(/^FROM (\S+) AS (\S+)$/gm)].map((m) => [m[1], m[2]]);
    expect(stages).toEqual([
      ['node:20-bookworm-slim', 'build'],
      ['node:20-bookworm-slim', 'runtime'],
    ]);
    expect(dockerfile).toMatch(/RUN npm ci --no-audit --no-fund\n/);
    expect(dockerfile).toMatch(/RUN npm run build/);
    expect(dockerfile).toMatch(/RUN npm ci --omit=dev/);
    expect(dockerfile).toMatch(/COPY --from=build \/app\/dist dist/);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["\/app\/deploy\/docker-entrypoint\.sh"\]$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .* CMD \["\/app\/deploy\/docker-entrypoint\.sh", "probe", "\/healthz"\]$/m);
    // The container runs as node, in a working directory of node's own (/app is root's): `cli file accept` saves there.
    const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime'));
    const workdir = [...runtime.matchAll(/^WORKDIR (\S+)$/gm)].at(-1)?.[1];
    expect(runtime.indexOf(`WORKDIR ${workdir}`)).toBeGreaterThan(runtime.indexOf('USER node'));
    expect(runtime).toMatch(new RegExp(`mkdir -p [^\n]*${workdir}[^\n]*&& chown node:node [^\n]*${workdir}`));
    // The image is made from the package files and the sources: none of them may be ignored.
    const ignored = readRepo('.dockerignore')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    for (const needed of ['package.json', 'package-lock.json', 'apps', 'libs', 'bin', 'deploy', 'tsconfig.json', 'tsconfig.build.json'])
      expect(ignored, needed).not.toContain(needed);
  });
});

describe('the container entrypoint', () => {
  const entrypoint = (args: string[], env: Record<string, string> = {}) =>
    spawnSync('sh', [join(REPO_ROOT, 'deploy/docker-entrypoint.sh'), ...args], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', ...env },
      timeout: 20_000,
    });

  it('refuses an app that does not exist, naming those that do', () => {
    for (const args of [['nosuch'], ['../gateway'], []]) {
      const run = entrypoint(args, args.length === 0 ? { PARLEY_APP: 'Nope' } : {});
      expect(run.status, args.join(' ')).toBe(2);
      expect(run.stderr).toMatch(/^parley: unknown app ".*"; run one of: .*gateway/);
      expect(run.stderr).toContain('presence');
    }
  });

  it('runs the app given by argument or PARLEY_APP (the CLI here, which needs no server)', () => {
    expect(entrypoint(['cli', '--help']).stdout).toContain('Usage: parley');
    expect(entrypoint(['--help'], { PARLEY_APP: 'cli' }).stdout).toContain('Usage: parley');
  });

  it('runs the app in the working directory it was started in (the image’s own, or `docker run -w`), not in /app', () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-entrypoint-'));
    try {
      // A node that says where it runs and what it was asked to run.
      writeFileSync(join(dir, 'node'), '#!/bin/sh\necho "$PWD $1"\n', { mode: 0o755 });
      const run = spawnSync('sh', [join(REPO_ROOT, 'deploy/docker-entrypoint.sh'), 'cli', '--help'], {
        cwd: dir,
        encoding: 'utf8',
        env: { PATH: `${dir}:${process.env.PATH ?? ''}` },
      });
      expect(run.stdout.trim()).toBe(`${dir} ${join(REPO_ROOT, 'dist/apps/cli/src/main.js')}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('probe', () => {
    let server: ParleyServer;
    beforeAll(async () => {
      server = await startParley();
    });
    afterAll(() => server?.dispose());

    it('exits 0 when the health path answers 2xx on PARLEY_HTTP_PORT, 1 when not', async () => {
      const port = String(server.httpPort);
      expect(entrypoint(['probe', '/healthz'], { PARLEY_HTTP_PORT: port }).status).toBe(0);
      expect(entrypoint(['probe', '/readyz'], { PARLEY_HTTP_PORT: port }).status).toBe(0);
      expect(entrypoint(['probe', '/nosuch'], { PARLEY_HTTP_PORT: port }).status).toBe(1);
      await server.stop();
      expect(entrypoint(['probe', '/healthz'], { PARLEY_HTTP_PORT: port }).status).toBe(1);
    });
  });
});
