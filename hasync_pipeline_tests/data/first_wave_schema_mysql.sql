-- The audit schema as the first wave's code made it (metadata.create_all, no Alembic): a database
-- made by it must upgrade in place.  Generated once from that code; do not edit.

CREATE TABLE sync_iterations (
	id BIGINT NOT NULL AUTO_INCREMENT, 
	sync_pair VARCHAR(255) NOT NULL, 
	direction VARCHAR(64) NOT NULL, 
	src VARCHAR(512) NOT NULL, 
	dest VARCHAR(512) NOT NULL, 
	started_at DATETIME(3) NOT NULL, 
	ended_at DATETIME(3), 
	status ENUM('running','success','partial_failure','failed') NOT NULL DEFAULT 'running', 
	dry_run TINYINT(1) NOT NULL DEFAULT 0, 
	files_created INTEGER DEFAULT 0, 
	files_updated INTEGER DEFAULT 0, 
	files_deleted INTEGER DEFAULT 0, 
	files_skipped INTEGER DEFAULT 0, 
	files_failed INTEGER DEFAULT 0, 
	total_bytes_transferred BIGINT DEFAULT 0, 
	error_message TEXT, 
	run_id VARCHAR(64), 
	dagster_run_id VARCHAR(64), 
	PRIMARY KEY (id)
)ENGINE=InnoDB CHARSET=utf8mb4;

CREATE INDEX idx_dry_run ON sync_iterations (dry_run);

CREATE INDEX idx_pair ON sync_iterations (sync_pair);

CREATE INDEX idx_pair_dry_started ON sync_iterations (sync_pair, dry_run, started_at);

CREATE INDEX idx_started ON sync_iterations (started_at);

CREATE UNIQUE INDEX uq_run_id ON sync_iterations (run_id);

CREATE TABLE sync_operations (
	id BIGINT NOT NULL AUTO_INCREMENT, 
	iteration_id BIGINT NOT NULL, 
	dry_run TINYINT(1) NOT NULL DEFAULT 0, 
	operation ENUM('create','update','delete') NOT NULL, 
	filepath VARCHAR(4096) NOT NULL, 
	size_before BIGINT, 
	size_after BIGINT, 
	md5_before VARCHAR(32), 
	md5_after VARCHAR(32), 
	started_at DATETIME(3) NOT NULL, 
	ended_at DATETIME(3), 
	status ENUM('success','fail') NOT NULL, 
	error_message VARCHAR(4096), 
	PRIMARY KEY (id), 
	CONSTRAINT fk_iteration FOREIGN KEY(iteration_id) REFERENCES sync_iterations (id)
)ENGINE=InnoDB CHARSET=utf8mb4;

CREATE INDEX idx_iteration ON sync_operations (iteration_id);
