package com.adobe.platform.query;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.TreeSet;
import java.util.UUID;
import java.util.stream.Stream;

import org.apache.spark.sql.Column;
import org.apache.spark.sql.DataFrameReader;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SQLContext;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.sources.BaseRelation;
import org.apache.spark.sql.sources.CreatableRelationProvider;
import org.apache.spark.sql.sources.RelationProvider;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

import scala.Option;
import scala.collection.immutable.Map;

/**
 * {@code spark.read.format("com.adobe.platform.query")} and {@code df.write.format(...)} over the
 * runtime's local data sets.
 *
 * A data set id is looked up in the run's catalog, which the runtime publishes as Spark settings
 * {@code spark.mlruntime.dataset.<id> = <format>\t<uri>} (session first, then the context); a
 * value that is a path or a file:// URI is read as it is. Reads hand Spark its own file relation
 * (Parquet, CSV, JSON lines), so scans are Spark's native ones. Writes follow the platform: each
 * save adds a batch to the data set ({@code mode("overwrite")} replaces it). CSV and JSON data sets
 * are single files; nested (XDM) columns are flattened to dotted names in CSV.
 */
public class DefaultSource implements RelationProvider, CreatableRelationProvider {
    public static final String CONF_PREFIX = "spark.mlruntime.dataset.";
    public static final String SANDBOX_CONF = "spark.mlruntime.sandboxName";

    /** Where a data set lives and how it is stored. */
    static final class Target {
        final String id;
        final Path path;
        final String format;
        Target(String id, Path path, String format) { this.id = id; this.path = path; this.format = format; }
    }

    @Override
    public BaseRelation createRelation(SQLContext sqlContext, Map<String, String> parameters) {
        Target target = resolve(sqlContext, parameters);
        if (!Files.exists(target.path)) {
            throw new IllegalArgumentException("Data set '" + target.id + "' has no data yet (" + target.path + ")");
        }
        return relationOf(sqlContext.sparkSession(), target);
    }

    @Override
    public BaseRelation createRelation(SQLContext sqlContext, SaveMode mode, Map<String, String> parameters,
                                       Dataset<Row> data) {
        Target target = resolve(sqlContext, parameters);
        boolean exists = Files.exists(target.path);
        if (mode == SaveMode.Ignore && exists) {
            return relationOf(sqlContext.sparkSession(), target);
        }
        boolean replace = mode == SaveMode.Overwrite || !exists;
        try {
            if (target.path.getParent() != null) {
                Files.createDirectories(target.path.getParent());
            }
            if ("parquet".equals(target.format)) {
                writeParquet(data, target, replace);
            } else {
                writeSingleFile(data, target, replace);
            }
        } catch (IOException exc) {
            throw new IllegalStateException("Cannot write data set '" + target.id + "' to " + target.path + ": " + exc, exc);
        }
        return relationOf(sqlContext.sparkSession(), target);
    }

    // --- where a data set is -------------------------------------------------------------------

    static Target resolve(SQLContext sqlContext, Map<String, String> parameters) {
        String id = option(parameters, QSOption.datasetId());
        if (id == null) {
            id = option(parameters, "path");
        }
        if (id == null || id.trim().isEmpty()) {
            throw new IllegalArgumentException("The data source com.adobe.platform.query needs the option "
                + QSOption.datasetId() + " (QSOption.datasetId()): the data set id");
        }
        id = id.trim();
        String entry = conf(sqlContext, CONF_PREFIX + id);
        if (entry != null) {
            int tab = entry.indexOf('\t');
            String format = tab > 0 ? entry.substring(0, tab) : null;
            String uri = tab >= 0 ? entry.substring(tab + 1) : entry;
            Path path = localPath(uri);
            return new Target(id, path, format == null || format.isEmpty() ? formatOf(path) : normalFormat(format));
        }
        // Not registered: a URI, a path with a folder in it (ids have none) or an existing file is
        // a path, relative to this process's folder, as the Python side reads it.
        if (id.startsWith("file:") || id.contains("/") || Files.exists(Paths.get(id))) {
            Path path = localPath(id);
            return new Target(id, path, formatOf(path));
        }
        String sandbox = conf(sqlContext, SANDBOX_CONF);
        TreeSet<String> known = knownIds(sqlContext);
        throw new IllegalArgumentException("Unknown data set id '" + id + "': not in the catalog"
            + (sandbox == null ? "" : " of sandbox '" + sandbox + "'")
            + "; known ids: " + (known.isEmpty() ? "none" : String.join(", ", known))
            + ". Add it with: run datasets add " + id + " PATH");
    }

    private static String option(Map<String, String> parameters, String name) {
        Option<String> value = parameters.get(name);
        if (value.isDefined()) {
            return value.get();
        }
        // the options map is case-insensitive in Spark; a plain map is not
        scala.collection.Iterator<scala.Tuple2<String, String>> it = parameters.iterator();
        while (it.hasNext()) {
            scala.Tuple2<String, String> pair = it.next();
            if (pair._1().equalsIgnoreCase(name)) {
                return pair._2();
            }
        }
        return null;
    }

    private static String conf(SQLContext sqlContext, String key) {
        String value = sqlContext.getConf(key, null);
        if (value != null) {
            return value;
        }
        return sqlContext.sparkContext().getConf().get(key, null);
    }

    private static TreeSet<String> knownIds(SQLContext sqlContext) {
        TreeSet<String> ids = new TreeSet<>();
        scala.collection.Iterator<scala.Tuple2<String, String>> it = sqlContext.getAllConfs().iterator();
        while (it.hasNext()) {
            String key = it.next()._1();
            if (key.startsWith(CONF_PREFIX)) {
                ids.add(key.substring(CONF_PREFIX.length()));
            }
        }
        for (scala.Tuple2<String, String> pair : sqlContext.sparkContext().getConf().getAll()) {
            if (pair._1().startsWith(CONF_PREFIX)) {
                ids.add(pair._1().substring(CONF_PREFIX.length()));
            }
        }
        return ids;
    }

    static Path localPath(String uri) {
        if (uri.startsWith("file:")) {
            return Paths.get(java.net.URI.create(uri.startsWith("file:///") || !uri.startsWith("file://")
                ? uri : "file:///" + uri.substring("file://".length()))).toAbsolutePath();
        }
        if (uri.contains("://")) {
            throw new IllegalArgumentException("Only local data sets are read and written here, not " + uri);
        }
        return Paths.get(uri).toAbsolutePath();
    }

    static String formatOf(Path path) {
        String name = path.getFileName() == null ? "" : path.getFileName().toString().toLowerCase(Locale.ROOT);
        if (name.endsWith(".csv")) {
            return "csv";
        }
        if (name.endsWith(".json") || name.endsWith(".jsonl")) {
            return "json";
        }
        return "parquet";
    }

    static String normalFormat(String format) {
        String lower = format.toLowerCase(Locale.ROOT);
        return "jsonl".equals(lower) ? "json" : lower;
    }

    // --- reading ----------------------------------------------------------------------------

    private static BaseRelation relationOf(SparkSession session, Target target) {
        DataFrameReader reader = session.read();
        Dataset<Row> frame;
        if ("csv".equals(target.format)) {
            frame = reader.option("header", "true").option("inferSchema", "true").csv(target.path.toString());
        } else if ("json".equals(target.format)) {
            frame = reader.json(target.path.toString());
        } else if ("parquet".equals(target.format)) {
            frame = reader.parquet(target.path.toString());
        } else {
            throw new IllegalArgumentException("Data set '" + target.id + "' has the format '" + target.format
                + "'; this data source reads parquet, csv and json");
        }
        LogicalPlan plan = ((org.apache.spark.sql.classic.Dataset<Row>) frame).queryExecution().analyzed();
        if (plan instanceof LogicalRelation) {
            return ((LogicalRelation) plan).relation();
        }
        throw new IllegalStateException("Spark read data set '" + target.id + "' as " + plan.nodeName()
            + ", not as a file relation");
    }

    // --- writing ----------------------------------------------------------------------------

    private static void writeParquet(Dataset<Row> data, Target target, boolean replace) throws IOException {
        if (!replace && Files.isRegularFile(target.path)) {
            // one Parquet file written by pandas: it becomes the first batch of a folder
            Path moved = target.path.resolveSibling(target.path.getFileName() + ".batch-" + UUID.randomUUID());
            Files.move(target.path, moved);
            Files.createDirectories(target.path);
            Files.move(moved, target.path.resolve("part-batch0-" + UUID.randomUUID() + ".parquet"));
        }
        if (replace && Files.isRegularFile(target.path)) {
            Files.delete(target.path);
        }
        data.write().mode(replace ? SaveMode.Overwrite : SaveMode.Append).parquet(target.path.toString());
    }

    private static void writeSingleFile(Dataset<Row> data, Target target, boolean replace) throws IOException {
        boolean csv = "csv".equals(target.format);
        if (!csv && !"json".equals(target.format)) {
            throw new IllegalArgumentException("Data set '" + target.id + "' has the format '" + target.format
                + "'; this data source writes parquet, csv and json");
        }
        Dataset<Row> frame = csv ? flattened(data) : data;
        Path staging = target.path.resolveSibling("." + target.path.getFileName() + ".staging-" + UUID.randomUUID());
        try {
            if (csv) {
                frame.coalesce(1).write().option("header", "true").csv(staging.toString());
            } else {
                frame.coalesce(1).write().json(staging.toString());
            }
            Path part = onlyPart(staging);
            if (replace || !Files.exists(target.path)) {
                if (Files.isDirectory(target.path)) {
                    deleteTree(target.path);
                }
                if (part == null) {
                    Files.write(target.path, csv ? header(frame).getBytes("UTF-8") : new byte[0]);
                } else {
                    Files.move(part, target.path, StandardCopyOption.REPLACE_EXISTING);
                }
            } else if (part != null) {
                appendRows(part, target.path, csv);
            }
        } finally {
            deleteTree(staging);
        }
    }

    private static String header(Dataset<Row> frame) {
        return String.join(",", frame.columns()) + "\n";
    }

    private static Path onlyPart(Path folder) throws IOException {
        List<Path> parts = new ArrayList<>();
        try (DirectoryStream<Path> stream = Files.newDirectoryStream(folder, "part-*")) {
            for (Path part : stream) {
                parts.add(part);
            }
        }
        return parts.isEmpty() ? null : parts.get(0);
    }

    /** The new rows at the end of the data set's file (a CSV part's header line left out). */
    private static void appendRows(Path part, Path target, boolean skipHeader) throws IOException {
        try (InputStream in = Files.newInputStream(part);
             OutputStream out = Files.newOutputStream(target, StandardOpenOption.APPEND)) {
            if (skipHeader) {
                int b;
                while ((b = in.read()) != -1 && b != '\n') {
                    // the header line
                }
            }
            in.transferTo(out);
        }
    }

    private static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(root)) {
            for (Path path : (Iterable<Path>) walk.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(path);
            }
        }
    }

    /** Struct columns (the XDM shape: `_tenant.store`) as dotted top-level names, for CSV. */
    static Dataset<Row> flattened(Dataset<Row> data) {
        List<Column> columns = new ArrayList<>();
        flatten(data.schema(), "", "", columns);
        return data.select(columns.toArray(new Column[0]));
    }

    private static void flatten(StructType schema, String prefix, String name, List<Column> out) {
        for (StructField field : schema.fields()) {
            String ref = prefix + "`" + field.name().replace("`", "``") + "`";
            String label = name + field.name();
            if (field.dataType() instanceof StructType) {
                flatten((StructType) field.dataType(), ref + ".", label + ".", out);
            } else {
                out.add(functions.col(ref).alias(label));
            }
        }
    }
}
