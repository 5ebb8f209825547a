-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d),
-- as POSTGRES_USER (platform), who then owns the databases: one per service.
CREATE DATABASE ordering;
CREATE DATABASE invoicing;
CREATE DATABASE lifecycle;
CREATE DATABASE notifications;
