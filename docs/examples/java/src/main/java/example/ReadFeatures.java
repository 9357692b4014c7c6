package example;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.cfg.JsonNodeFeature;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import redis.clients.jedis.Pipeline;
import redis.clients.jedis.RedisClient;
import redis.clients.jedis.Response;

/**
 * Reads streamfeat features of many entities straight from Redis, in one round trip
 * (pipelined HMGET), with the rules of the Python client (docs/serving.md).
 *
 * <pre>
 * java -jar target/read-features.jar -redis redis://localhost:6379/0 -topology orders \
 *     -fields orders__5m,orders__1h,amount_sum__1h -defaults '{"orders__5m":0}' u1 u2 42
 * </pre>
 *
 * <p>The layout (docs/CONTRACT.md section 4): one hash per entity, key {@code
 * sf:{topology}:{entity}}; one field per feature and window, {@code {feature}__{window}}; each
 * value is one JSON document (decimal text for numbers, JSON for strings and lists); the
 * reserved fields {@code _v} (the write's version), {@code _asof} (event time, ms, the values
 * are as of) and {@code _updated} (wall clock, ms, of the write).
 */
public final class ReadFeatures {
  static final String VERSION = "_v";
  static final String ASOF = "_asof";
  static final String UPDATED = "_updated";

  /** Numbers exactly as stored: a count may exceed 2^53, a sum is the double written. */
  static final ObjectMapper JSON =
      new ObjectMapper()
          .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
          .enable(DeserializationFeature.USE_BIG_INTEGER_FOR_INTS)
          .configure(JsonNodeFeature.STRIP_TRAILING_BIGDECIMAL_ZEROES, false);

  /** One entity: its values (every field asked) and what Redis says of it. */
  public record Entity(
      Map<String, JsonNode> values, boolean found, Long asofMs, Long updatedMs, String version) {}

  /**
   * Every field of every entity: its stored value ({@code null} where the hash lacks the
   * field: an aggregation over no events); for an entity Redis does not hold (no {@code _v}:
   * never written, or expired), the topology's default of the field, or {@code null}.
   */
  public static Map<String, Entity> read(
      RedisClient redis,
      String topology,
      List<String> entities,
      List<String> fields,
      Map<String, JsonNode> defaults)
      throws IOException {
    List<String> wanted = new ArrayList<>(fields);
    wanted.addAll(List.of(VERSION, ASOF, UPDATED));
    String[] asked = wanted.toArray(new String[0]);
    Map<String, Response<List<String>>> replies = new LinkedHashMap<>();
    try (Pipeline pipe = redis.pipelined()) {
      for (String id : new LinkedHashSet<>(entities)) {
        replies.put(id, pipe.hmget("sf:" + topology + ":" + id, asked));
      }
      pipe.sync();
    }
    int n = fields.size();
    Map<String, Entity> out = new LinkedHashMap<>();
    for (Map.Entry<String, Response<List<String>>> e : replies.entrySet()) {
      List<String> row = e.getValue().get();
      Map<String, JsonNode> values = new LinkedHashMap<>();
      String version = row.get(n);
      if (version == null) {
        for (String f : fields) {
          values.put(f, defaults.getOrDefault(f, NullNode.getInstance()));
        }
        out.put(e.getKey(), new Entity(values, false, null, null, null));
        continue;
      }
      for (int i = 0; i < n; i++) {
        String text = row.get(i);
        values.put(fields.get(i), text == null ? NullNode.getInstance() : decode(text));
      }
      out.put(
          e.getKey(),
          new Entity(values, true, number(row.get(n + 1)), number(row.get(n + 2)), version));
    }
    return out;
  }

  /** One stored value: every stored text is one JSON document. */
  public static JsonNode decode(String text) throws IOException {
    return JSON.readTree(text);
  }

  /**
   * {@code _v} as (generation, partition, offset): a backfill writes with a higher generation;
   * partition and offset are those of the last Kafka record the values reflect. The text's
   * order is the version order.
   */
  public static long[] parseVersion(String version) {
    String[] parts = version.split("\\.");
    return new long[] {
      Long.parseLong(parts[0]), Long.parseLong(parts[1]), Long.parseLong(parts[2])
    };
  }

  private static Long number(String text) {
    return text == null ? null : Long.valueOf(text);
  }

  public static void main(String[] args) throws IOException {
    String url = "redis://localhost:6379/0";
    String topology = null;
    String fieldList = null;
    String defaultsJson = "{}";
    List<String> ids = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "-redis" -> url = args[++i];
        case "-topology" -> topology = args[++i];
        case "-fields" -> fieldList = args[++i];
        case "-defaults" -> defaultsJson = args[++i];
        default -> ids.add(args[i]);
      }
    }
    if (topology == null || fieldList == null || ids.isEmpty()) {
      System.err.println(
          "usage: read-features -topology NAME -fields F1,F2 [-redis URL] [-defaults JSON]"
              + " ENTITY...");
      System.exit(2);
    }
    Map<String, JsonNode> defaults = new LinkedHashMap<>();
    JSON.readTree(defaultsJson).properties().forEach(d -> defaults.put(d.getKey(), d.getValue()));
    Map<String, Entity> found;
    try (RedisClient redis = RedisClient.create(URI.create(url))) {
      found = read(redis, topology, ids, List.of(fieldList.split(",")), defaults);
    }
    ObjectNode doc = JSON.createObjectNode();
    ObjectNode entities = doc.putObject("entities");
    ObjectNode meta = doc.putObject("meta");
    for (Map.Entry<String, Entity> e : found.entrySet()) {
      Entity entity = e.getValue();
      entities.set(e.getKey(), JSON.valueToTree(entity.values()));
      ObjectNode m = meta.putObject(e.getKey());
      m.put("found", entity.found());
      m.put("asof_ms", entity.asofMs());
      m.put("updated_ms", entity.updatedMs());
      m.put("version", entity.version());
      if (entity.version() != null) {
        long[] v = parseVersion(entity.version());
        m.put("generation", v[0]);
        m.put("partition", v[1]);
        m.put("offset", v[2]);
      }
    }
    System.out.println(JSON.writeValueAsString(doc));
  }
}
