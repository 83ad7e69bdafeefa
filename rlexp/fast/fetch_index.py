"""A Fetch env's per-step Python with MuJoCo's arrays read and written by precomputed index: the same numbers,
fewer Python calls.

gymnasium-robotics assembles every Fetch observation by name: each robot joint through its own
`get_joint_qpos`/`get_joint_qvel` call (a name lookup and a copy each, ~15 calls per step), each site
through `mj_name2id`, and a fresh Jacobian per velocity. Applying an action walks every equality constraint
to find the mocap weld and splits arrays twice; the gripper block (Push, Reach) looks both finger joints up by
name. `install` replaces the env's `_get_obs`, `_set_action` and `_step_callback` on that one instance with
objects that resolve names and indices once and then apply the same floating-point operations in the same
order (copies, `jac @ qvel`, `* dt`, subtraction, `mat2euler`; the action's float32 scaling and float64
concatenation; mocap = body pose + delta), so observations, rewards and infos are bitwise equal to the
original (tests/test_fast_path.py steps both on real episodes). Nothing is stored in the env's own state, so
checkpoints are the same with or without it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium_robotics.envs.fetch.fetch_env import MujocoFetchEnv
from gymnasium_robotics.utils import rotations


class FetchObservation:
    """A Fetch env's `_get_obs`, reading qpos/qvel/site arrays at indices resolved once."""

    def __init__(self, env: Any) -> None:
        model = env.model
        self.env, self.data, self.model = env, env.data, model
        self.has_object = bool(env.has_object)
        site = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)  # noqa: E731
        self.grip = site("robot0:grip")
        self.obj = site("object0") if self.has_object else -1
        # robot_get_obs: joints named robot*, in model order; the gripper is the last two (1-dof each)
        robot = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)
                 for n in env._model_names.joint_names if n.startswith("robot")]
        fingers = robot[-2:]
        if len(fingers) != 2 or any(model.jnt_type[j] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
                                    for j in fingers):
            raise ValueError("FetchObservation: the last two robot joints are not 1-dof hinge/slide joints")
        self.finger_qpos = np.array([model.jnt_qposadr[j] for j in fingers])
        self.finger_qvel = np.array([model.jnt_dofadr[j] for j in fingers])
        self.jacp = np.zeros((3, model.nv))
        self.jacr = np.zeros((3, model.nv))

    def _velp(self, site_id: int) -> np.ndarray:
        mujoco.mj_jacSite(self.model, self.data, self.jacp, None, site_id)
        return self.jacp @ self.data.qvel

    def __call__(self) -> dict[str, np.ndarray]:
        env, data = self.env, self.data
        dt = env.n_substeps * self.model.opt.timestep
        grip_pos = data.site_xpos[self.grip]
        grip_velp = self._velp(self.grip) * dt
        gripper_state = data.qpos[self.finger_qpos]
        gripper_vel = data.qvel[self.finger_qvel] * dt
        if self.has_object:
            object_pos = data.site_xpos[self.obj]
            object_rot = rotations.mat2euler(data.site_xmat[self.obj].reshape(3, 3))
            object_velp = self._velp(self.obj) * dt
            mujoco.mj_jacSite(self.model, data, None, self.jacr, self.obj)
            object_velr = (self.jacr @ data.qvel) * dt
            object_rel_pos = object_pos - grip_pos
            object_velp -= grip_velp
            obs = np.concatenate([grip_pos, object_pos, object_rel_pos, gripper_state, object_rot, object_velp,
                                  object_velr, grip_velp, gripper_vel])
            achieved_goal = object_pos.copy()
        else:
            obs = np.concatenate([grip_pos, gripper_state, grip_velp, gripper_vel])
            achieved_goal = grip_pos.copy()
        return {"observation": obs, "achieved_goal": achieved_goal, "desired_goal": env.goal.copy()}


class FetchAction:
    """A MuJoCo Fetch env's `_set_action`: the base Fetch action vector, then actuator controls and mocap pose as
    `ctrl_set_action` / `mocap_set_action` set them, with the weld's mocap and body ids found once."""

    def __init__(self, env: Any) -> None:
        model = env.model
        self.env, self.data, self.model = env, env.data, model
        self.n_mocap = int(model.nmocap) * 7
        self.welds = []  # (mocap id, welded body id), as reset_mocap2body_xpos resolves them
        for eq_type, obj1, obj2 in zip(model.eq_type, model.eq_obj1id, model.eq_obj2id, strict=True) \
                if self.n_mocap else ():
            if eq_type == mujoco.mjtEq.mjEQ_WELD:
                mocap = model.body_mocapid[obj1]
                pair = (int(mocap), int(obj2)) if mocap != -1 else (int(model.body_mocapid[obj2]), int(obj1))
                if pair[0] == -1:
                    raise ValueError("FetchAction: a weld without a mocap body")
                self.welds.append(pair)
        # ctrl_set_action: torque actuators take the action, position actuators the joint's qpos + action
        self.ctrl_qpos = [None if model.actuator_biastype[i] == 0
                          else int(model.jnt_qposadr[model.actuator_trnid[i, 0]]) for i in range(model.nu)]

    def __call__(self, action: np.ndarray) -> None:
        action = super(MujocoFetchEnv, self.env)._set_action(action)  # the base Fetch env's vector, unchanged
        data = self.data
        if len(data.ctrl) > 0:
            ctrl = action[self.n_mocap:]
            for i in range(ctrl.shape[0]):
                qpos = self.ctrl_qpos[i]
                data.ctrl[i] = ctrl[i] if qpos is None else data.qpos[qpos] + ctrl[i]
        if self.n_mocap:
            mocap = action[: self.n_mocap].reshape(-1, 7)
            for mocap_id, body in self.welds:
                data.mocap_pos[mocap_id][:] = data.xpos[body]
                data.mocap_quat[mocap_id][:] = data.xquat[body]
            data.mocap_pos[:] = data.mocap_pos + mocap[:, :3]
            data.mocap_quat[:] = data.mocap_quat + mocap[:, 3:]


class FetchGripperBlock:
    """A MuJoCo Fetch env's `_step_callback`: with a blocked gripper, both finger joints back to 0, then
    `mj_forward`, as gymnasium-robotics does by joint name."""

    FINGERS = ("robot0:l_gripper_finger_joint", "robot0:r_gripper_finger_joint")

    def __init__(self, env: Any) -> None:
        model = env.model
        self.env, self.data, self.model = env, env.data, model
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in self.FINGERS]
        if -1 in ids or any(model.jnt_type[j] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
                            for j in ids):
            raise ValueError("FetchGripperBlock: the finger joints are not 1-dof hinge/slide joints")
        self.qpos = [int(model.jnt_qposadr[j]) for j in ids]

    def __call__(self) -> None:
        if self.env.block_gripper:
            for adr in self.qpos:
                self.data.qpos[adr] = 0.0
            mujoco.mj_forward(self.model, self.data)


def install(env: gym.Env) -> bool:
    """Give a MuJoCo Fetch env (under any wrappers) the indexed `_get_obs`, `_set_action` and `_step_callback`;
    False (unchanged) for other envs. A subclass that overrides one of them keeps its own for that one."""
    base = env.unwrapped
    if not isinstance(base, MujocoFetchEnv):
        return False
    cls = type(base)
    pieces = {"_get_obs": FetchObservation, "_set_action": FetchAction, "_step_callback": FetchGripperBlock}
    ours = {"_get_obs": cls.generate_mujoco_observations is MujocoFetchEnv.generate_mujoco_observations
            and cls._get_obs is MujocoFetchEnv._get_obs, "_set_action": cls._set_action is MujocoFetchEnv._set_action,
            "_step_callback": cls._step_callback is MujocoFetchEnv._step_callback}
    replaced = False
    for name, piece in pieces.items():
        if not ours[name]:
            continue  # a subclass's own method: leave it alone
        try:
            setattr(base, name, piece(base))
        except ValueError:  # a model these indices do not describe (other joints, welds): keep the original
            continue
        replaced = True
    return replaced


def indexed(env: gym.Env) -> bool:
    """The env (under any wrappers) steps by index: `install` replaced its `_get_obs`."""
    return isinstance(vars(env.unwrapped).get("_get_obs"), FetchObservation)
